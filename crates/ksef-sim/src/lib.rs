//! KSeF API 2.0 simulator. Issue 3 builds it; nothing here yet.
