//! Where the agent looks outside the config file: the directories and credentials systemd hands
//! over (`STATE_DIRECTORY`, `LOGS_DIRECTORY`, `CONFIGURATION_DIRECTORY`,
//! `CREDENTIALS_DIRECTORY`). Read once by `main` and passed to [`super::load`], so validation
//! itself never reads the process environment and tests can hand in their own.

use std::path::PathBuf;

/// Where the agent looks for things outside the config file.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `$STATE_DIRECTORY` (systemd `StateDirectory=`): the default state directory.
    pub state_directory: Option<PathBuf>,
    /// `$LOGS_DIRECTORY` (systemd `LogsDirectory=`): the default log directory.
    pub logs_directory: Option<PathBuf>,
    /// `$CONFIGURATION_DIRECTORY`: where `copilot-edge.toml` is looked for when no file is named.
    pub configuration_directory: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY` (`LoadCredential=`): secrets read by name, e.g. `mqtt-password`.
    pub credentials_directory: Option<PathBuf>,
}

impl Environment {
    /// Reads the systemd directory variables (first entry of each colon-separated list).
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .map(|v| {
                    v.to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        Environment {
            state_directory: var("STATE_DIRECTORY"),
            logs_directory: var("LOGS_DIRECTORY"),
            configuration_directory: var("CONFIGURATION_DIRECTORY"),
            credentials_directory: var("CREDENTIALS_DIRECTORY"),
        }
    }

    /// A credential file's content, if systemd handed one over.
    pub(super) fn credential(&self, name: &str) -> Option<String> {
        let dir = self.credentials_directory.as_ref()?;
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    }
}
