//! The PD and region model of the simulated cluster (being written).
