//! Key encodings on the wire: memcomparable bytes and API v2 keyspace prefixes (being written).
