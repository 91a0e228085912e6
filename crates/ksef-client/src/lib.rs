//! KSeF API 2.0 client. Issue 3 builds it; nothing here yet.
