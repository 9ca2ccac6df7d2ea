"""The errors of the content layer: what a peer or a user can get wrong about content.

Everything a provider sends (a manifest, a piece, a proof) and every content id a user
types or a peer names is untrusted; each failure is a :class:`ContentError`, a
:class:`~zmesh.errors.RemoteProtocolError`, so the one boundary that turns remote errors
into drops (and scores the sender down) handles it.  Misuse by our own program (asking to
rebuild a group from too few pieces, impossible parameters) is a
:class:`~zmesh.errors.LocalProtocolError`.
"""

from ..errors import LocalProtocolError, RemoteProtocolError


class ContentError(RemoteProtocolError):
    """Content data from outside (a manifest, a piece, a proof, an id) is not acceptable."""


class ManifestError(ContentError):
    """A manifest does not parse, or lies about its sizes."""


class ContentIdError(ContentError):
    """A content id is not ``zm1`` followed by 52 characters of lowercase base32."""


class ProofError(ContentError):
    """A piece or a proof does not verify against the manifest's Merkle root."""


class NotEnoughPiecesError(LocalProtocolError):
    """A group was asked to be rebuilt from fewer than the pieces it needs."""
