"""Edwards25519 point arithmetic in pure Python, for checks the crypto backends do not make.

RFC 8032 leaves one choice open: whether Ed25519 verification multiplies by the cofactor.
OpenSSL (pyca) checks ``[S]B = R + [k]A``; noble checks ``[8][S]B = [8]R + [8][k]A``.  The
two agree unless ``A`` or ``R`` has a small-order component, so :mod:`zmesh.crypto.signing`
accepts only points of prime order ``L`` (:func:`has_prime_order`), and both runtimes give
the same verdict on every signature (docs/decisions.md, D30).

Points are in extended coordinates ``(X, Y, Z, T)`` with ``x = X/Z``, ``y = Y/Z`` and
``xy = T/Z`` (Hisil, Wong, Carter and Dawson, "Twisted Edwards curves revisited", 2008).
The addition law is complete on this curve (``a = -1`` is a square, ``d`` is not), so no
input needs a special case.  Everything here is variable-time: use it on public values
only (keys and signatures), never on secrets.
"""

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
_D2 = 2 * D % P

Point = tuple[int, int, int, int]

IDENTITY: Point = (0, 1, 1, 0)
_BASE_Y = 4 * pow(5, -1, P) % P


def _recover_x(y: int, sign: int) -> int | None:
    """The x with ``-x^2 + y^2 = 1 + d x^2 y^2`` and the given low bit (RFC 8032, 5.1.3)."""
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    vxx = v * x * x % P
    if vxx == (P - u) % P:
        x = x * SQRT_M1 % P
    elif vxx != u:
        return None  # not on the curve
    if x == 0 and sign:
        return None  # "-0" is not a canonical encoding
    if x & 1 != sign:
        x = P - x
    return x


def decode(data: bytes) -> Point | None:
    """Decode a 32-byte point as RFC 8032, section 5.1.3 does, strictly.

    Returns None for a non-canonical encoding (``y >= p``, or ``x = 0`` with the sign bit
    set) and for a point not on the curve.  Raises ValueError if ``data`` is not 32 bytes.
    """
    if len(data) != 32:
        raise ValueError("Edwards25519 points are encoded in 32 bytes")
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= P:
        return None
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def encode(point: Point) -> bytes:
    """The canonical 32-byte encoding of ``point`` (RFC 8032, section 5.1.2)."""
    X, Y, Z, _ = point
    zinv = pow(Z, -1, P)
    x, y = X * zinv % P, Y * zinv % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def add(p: Point, q: Point) -> Point:
    """``p + q`` (add-2008-hwcd-3, for ``a = -1``)."""
    X1, Y1, Z1, T1 = p
    X2, Y2, Z2, T2 = q
    A = (Y1 - X1) * (Y2 - X2) % P
    B = (Y1 + X1) * (Y2 + X2) % P
    C = T1 * _D2 * T2 % P
    Dz = 2 * Z1 * Z2 % P
    E, F, G, H = B - A, Dz - C, Dz + C, B + A
    return (E * F % P, G * H % P, F * G % P, E * H % P)


def double(p: Point) -> Point:
    """``2p`` (dbl-2008-hwcd, for ``a = -1``)."""
    X1, Y1, Z1, _ = p
    A = X1 * X1 % P
    B = Y1 * Y1 % P
    C = 2 * Z1 * Z1 % P
    E = ((X1 + Y1) ** 2 - A - B) % P
    G = B - A
    F = G - C
    H = -A - B
    return (E * F % P, G * H % P, F * G % P, E * H % P)


def negate(p: Point) -> Point:
    X, Y, Z, T = p
    return (-X % P, Y, Z, -T % P)


def mul(k: int, p: Point) -> Point:
    """``[k]p`` for ``k >= 0`` by double-and-add (variable time: public scalars only)."""
    if k < 0:
        raise ValueError("scalar must be non-negative")
    out = IDENTITY
    for bit in bin(k)[2:]:
        out = double(out)
        if bit == "1":
            out = add(out, p)
    return out


def equal(p: Point, q: Point) -> bool:
    """Whether ``p`` and ``q`` are the same point (their coordinates are projective)."""
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def is_identity(p: Point) -> bool:
    return p[0] % P == 0 and (p[1] - p[2]) % P == 0


def _base() -> Point:
    x = _recover_x(_BASE_Y, 0)
    assert x is not None
    return (x, _BASE_Y, 1, x * _BASE_Y % P)


BASE: Point = _base()  # RFC 8032, section 5.1: y = 4/5, x even


def _wnaf(k: int, width: int) -> tuple[int, ...]:
    """The width-``w`` non-adjacent form of ``k``, most significant digit first."""
    digits = []
    while k:
        if k & 1:
            digit = k % (1 << width)
            if digit >= 1 << (width - 1):
                digit -= 1 << width
            k -= digit
        else:
            digit = 0
        digits.append(digit)
        k >>= 1
    return tuple(reversed(digits))


_WIDTH = 5
_L_WNAF = _wnaf(L, _WIDTH)  # 253 digits, 26 of them non-zero


def _times_l_is_identity(p: Point) -> bool:
    """Whether ``[L]p`` is the identity, i.e. ``p`` has no small-order component.

    The hot loop of a verification: 252 doublings (projective, without ``T`` unless an
    addition follows) and 25 additions of precomputed odd multiples, inlined.
    """
    odd = [p]  # p, 3p, 5p, ..., 15p in the "cached" form (Y-X, Y+X, 2dT, 2Z)
    twice = double(p)
    for _ in range((1 << (_WIDTH - 2)) - 1):
        odd.append(add(odd[-1], twice))
    table = [((Y - X) % P, (Y + X) % P, T * _D2 % P, 2 * Z % P) for X, Y, Z, T in odd]
    X, Y, Z, T = p  # the leading digit of L's wNAF is 1
    digits = _L_WNAF
    n = len(digits)
    for i in range(1, n):
        digit = digits[i]
        # double (dbl-2008-hwcd); T is needed only when an addition follows
        A = X * X % P
        B = Y * Y % P
        C = 2 * Z * Z % P
        E = ((X + Y) ** 2 - A - B) % P
        G = B - A
        F = G - C
        H = -A - B
        X, Y, Z = E * F % P, G * H % P, F * G % P
        if digit:
            T = E * H % P
            ym, yp, t2d, z2 = table[abs(digit) >> 1]
            if digit < 0:  # subtracting q adds (-x, y): swap Y-X and Y+X, negate T
                ym, yp, t2d = yp, ym, -t2d
            A = (Y - X) * ym % P
            B = (Y + X) * yp % P
            C = T * t2d % P
            Dz = Z * z2 % P
            E, F, G, H = B - A, Dz - C, Dz + C, B + A
            X, Y, Z = E * F % P, G * H % P, F * G % P
    return X % P == 0 and (Y - Z) % P == 0


def has_prime_order(data: bytes) -> bool:
    """Whether ``data`` canonically encodes a point of order exactly ``L``.

    False for a non-canonical encoding, a point off the curve, the identity, the other
    seven small-order points and every point with a small-order component (``[L]P != 0``).
    Raises ValueError if ``data`` is not 32 bytes.
    """
    point = decode(data)
    return point is not None and not is_identity(point) and _times_l_is_identity(point)
