//! Raw KV storage of the simulated cluster (being written).
