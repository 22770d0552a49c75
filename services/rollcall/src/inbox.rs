//! `rollcall inbox`: operations on a file-drop connector's inbox.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum InboxAction {
    /// Move a rejected file (<inbox>/rejected/<name>) back into its inbox, so the
    /// connector reads it again (after fixing the file or the connector's settings).
    Retry {
        /// The rejected file, e.g. .local/inbox/grand-bend/rejected/attendance.csv
        file: PathBuf,
    },
}

pub fn run(action: InboxAction) -> anyhow::Result<()> {
    match action {
        InboxAction::Retry { file } => {
            let (to, reason) =
                rollcall_connector_csv::retry_rejected(&file).map_err(anyhow::Error::msg)?;
            if let Some(r) = reason {
                let first = r.lines().next().unwrap_or("").trim();
                println!("it had been rejected: {first}");
            }
            println!(
                "moved back into the inbox: {} — the connector reads it on its next poll (rejected again, with a new reason, if the problem is still there)",
                to.display()
            );
            Ok(())
        }
    }
}
