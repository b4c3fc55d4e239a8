//! Backoff: client-go's retry kinds as pure values that yield deadlines (being written).
