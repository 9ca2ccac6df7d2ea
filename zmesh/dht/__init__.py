"""A Kademlia DHT, sans-I/O: routing table, iterative lookups, signed records, wire messages
and the S/Kademlia node-id puzzle (issue 9).

Every component takes ``now`` (and, where it draws randomness, an injected
:class:`~zmesh.rng.Rng`); none reads a clock or touches a socket.  RPCs ride on links: the
node decodes :mod:`zmesh.dht.messages`, feeds answers to a :class:`~zmesh.dht.lookup.Lookup`
and sends the requests it asks for.

References: Maymounkov and Mazières, "Kademlia: A Peer-to-peer Information System Based on
the XOR Metric" (IPTPS 2002); Baumgart and Mies, "S/Kademlia: A Practicable Approach Towards
Secure Key-Based Routing" (ICPADS 2007); libp2p's Kademlia DHT specification; BitTorrent's
BEP 5 (Mainline DHT).
"""
