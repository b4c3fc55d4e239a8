//! Transactions: the pieces a transaction handle and the transaction machines are built from.
//!
//! - [`buffer`]: the write buffer (client-go's memdb and union store), a pure data
//!   structure that lives in the `Transaction` handle: buffered writes with key flags,
//!   nested staging, size limits, iterators, and the merge of the buffer over what the
//!   store returns.

pub mod buffer;
pub mod commit;
