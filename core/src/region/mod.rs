//! Region cache and routing (being written).
