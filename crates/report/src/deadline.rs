//! When an invoice must be in KSeF, by law: the Polish calendar and the deadline per offline
//! mode live in the domain (`relay_domain::polish_calendar`, `relay_domain::offline`), where the
//! record keeps each document's deadline; re-exported here for the report's readers.

pub use relay_domain::polish_calendar::{
    easter, is_business_day, is_offline_at, is_public_holiday, legal_deadline, next_business_day, poland_date, poland_midnight,
    poland_offset,
};
