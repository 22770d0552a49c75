//! `rollcall-connector-edfi`: the Ed-Fi connector as its own small binary (container
//! images). Same code as `rollcall connector run <name>`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    rollcall_connector_kit::binary_main(rollcall_connector_edfi::FACTORY);
}
