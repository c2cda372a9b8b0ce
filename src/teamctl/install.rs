//! `teamctl install DIR`: the member pods' init container copies the binary into a shared volume.

use std::path::{Path, PathBuf};

use super::{EXIT_OK, EXIT_UNAVAILABLE};

pub(super) fn install(dir: &Path) -> u8 {
    let result = (|| -> std::io::Result<PathBuf> {
        let me = std::env::current_exe()?;
        std::fs::create_dir_all(dir)?;
        let target = dir.join("teamctl");
        let tmp = dir.join(".teamctl.tmp");
        std::fs::copy(&me, &tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::rename(&tmp, &target)?;
        Ok(target)
    })();
    match result {
        Ok(target) => {
            println!("installed {}", target.display());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: cannot install teamctl into {}: {e}", dir.display());
            EXIT_UNAVAILABLE
        }
    }
}
