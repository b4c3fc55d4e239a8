//! Percolator MVCC storage of the simulated cluster (being written).
