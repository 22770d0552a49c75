//! The connectors this build knows. Adding a SIS connector = one line here (plus the
//! crate in Cargo.toml); see docs/adding-a-connector.md.

use rollcall_connector_kit::Factory;

pub const CONNECTORS: &[Factory] = &[
    rollcall_connector_edfi::FACTORY,
    rollcall_connector_csv::FACTORY,
];
