//! Directory outputs (a report, a trained model, an adapter, an export) are built in a staging
//! directory beside the one the user named and moved in file by file at the end: an error, a
//! panic or Ctrl-C leaves the named directory as it was, never half-built.

use super::{
    commit_lock, kept_name, record_written, track_temporary, untrack_temporary, written_by_alens, FileIdentity,
};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A staging directory for the directory output `dest`; [`StagedDir::commit`] moves its files
/// into `dest`. Dropped uncommitted, it is removed, unless [`StagedDir::hold`] said it holds
/// what a resumed run needs.
pub struct StagedDir {
    staging: PathBuf,
    dest: PathBuf,
    /// What stood in `dest` when the work began, by name: what appears or changes there
    /// meanwhile is never replaced.
    found: BTreeMap<OsString, FileIdentity>,
    /// A resumable staging directory is locked while this run uses it, so two runs never
    /// build into one.
    _lock: Option<std::fs::File>,
    /// Whether the staging directory is a tracked temporary (removed by Drop and by the signal
    /// handler). A held one is left for `--resume`.
    temporary: bool,
    committed: bool,
}

impl StagedDir {
    /// A fresh staging directory with a unique hidden name beside `dest`.
    pub fn create(dest: &Path) -> Result<Self> {
        let (parent, name) = parent_and_name(dest)?;
        std::fs::create_dir_all(&parent).with_context(|| format!("failed to create directory {}", parent.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".staging")
            .tempdir_in(&parent)
            .with_context(|| format!("failed to create a staging directory in {}", parent.display()))?
            .keep();
        track_temporary(&staging);
        Ok(Self {
            staging,
            dest: dest.to_path_buf(),
            found: found_in(dest),
            _lock: None,
            temporary: true,
            committed: false,
        })
    }

    /// Where a resumable run on `dest` builds: `DEST.partial`, a fixed name, so that the same
    /// command with `--resume` finds it again.
    pub fn partial_path(dest: &Path) -> PathBuf {
        let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".partial");
        dest.with_file_name(name)
    }

    /// The staging directory of a resumable run on `dest` ([`StagedDir::partial_path`]). It is
    /// never a symbolic link or something that is not a directory; one already there is an
    /// interrupted run, continued only with `reuse`; it is locked while this run uses it.
    /// A fresh one is a temporary until [`StagedDir::hold`].
    pub fn resumable(dest: &Path, reuse: bool) -> Result<Self> {
        let staging = Self::partial_path(dest);
        let existed = match std::fs::symlink_metadata(&staging) {
            Ok(meta) if meta.file_type().is_symlink() => bail!(
                "refusing to use {}: it is a symbolic link (alens names this directory after the output and writes it itself)",
                staging.display()
            ),
            Ok(meta) if !meta.is_dir() => {
                bail!("refusing to use {}: it exists and is not a directory", staging.display())
            }
            Ok(_) if !reuse => bail!(
                "{} holds an interrupted run: rerun with --resume to continue it, or delete it",
                staging.display()
            ),
            Ok(_) => true,
            Err(_) => {
                let (parent, _) = parent_and_name(dest)?;
                std::fs::create_dir_all(&parent)
                    .with_context(|| format!("failed to create directory {}", parent.display()))?;
                std::fs::create_dir(&staging).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                        "another alens run is writing {}; wait for it or choose another output",
                        staging.display()
                    ),
                    _ => anyhow::anyhow!("failed to create {}: {e}", staging.display()),
                })?;
                false
            }
        };
        if !existed {
            track_temporary(&staging);
        }
        let mut this = Self {
            staging: staging.clone(),
            dest: dest.to_path_buf(),
            found: found_in(dest),
            _lock: None,
            temporary: !existed,
            committed: false,
        };
        let lock = std::fs::File::open(&staging).with_context(|| format!("failed to open {}", staging.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another alens run is writing {}; wait for it or choose another output",
                staging.display()
            ),
            // A file system without locks: the exclusive creation above still keeps two
            // fresh runs apart.
            Err(std::fs::TryLockError::Error(_)) => {}
        }
        this._lock = Some(lock);
        Ok(this)
    }

    /// Where the command writes.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The staging directory now holds what a resumed run needs (a checkpoint): an error or an
    /// interruption leaves it for `--resume` instead of removing it.
    pub fn hold(&mut self) {
        if self.temporary {
            untrack_temporary(&self.staging);
            self.temporary = false;
        }
    }

    /// Moves every file of the staging directory into the destination (created if need be)
    /// and removes the staging directory. All or nothing: when a file there is not what stood
    /// there when the work began (it appeared or changed meanwhile), or is not alens' own,
    /// nothing is moved, and the staging directory is kept under a name that is said.
    pub fn commit(mut self) -> Result<()> {
        // A signal handler waits for this lock: an interruption never lands between two moves.
        let _commits = commit_lock();
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&self.staging).with_context(|| format!("failed to read {}", self.staging.display()))?
        {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                bail!(
                    "{} holds {}, which is not a file this run wrote",
                    self.staging.display(),
                    entry.file_name().to_string_lossy()
                );
            }
            names.push(entry.file_name());
        }
        names.sort();
        let changed = |name: &OsString| {
            let dest = self.dest.join(name);
            let now = FileIdentity::at(&dest);
            (now != self.found.get(name).copied() || (now.is_some() && !written_by_alens(&dest))).then_some(dest)
        };
        let conflict = if std::fs::metadata(&self.dest).is_ok_and(|m| !m.is_dir()) {
            Some(self.dest.clone())
        } else {
            names.iter().find_map(changed)
        };
        if let Some(dest) = conflict {
            return self.keep_aside(&dest);
        }
        std::fs::create_dir_all(&self.dest).with_context(|| format!("failed to create {}", self.dest.display()))?;
        // New files first, none of them over anything; alens' own earlier outputs are replaced
        // only once all of those are in.
        let (new, replaced): (Vec<_>, Vec<_>) = names.iter().partition(|name| !self.found.contains_key(*name));
        let mut moved: Vec<&OsString> = Vec::new();
        for name in new {
            match rename_noclobber(&self.staging.join(name), &self.dest.join(name)) {
                Ok(()) => moved.push(name),
                Err(e) => {
                    for back in moved {
                        let _ = std::fs::rename(self.dest.join(back), self.staging.join(back));
                    }
                    let dest = self.dest.join(name);
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        return self.keep_aside(&dest);
                    }
                    return Err(e).with_context(|| format!("failed to move {} into place", dest.display()));
                }
            }
        }
        for name in replaced {
            std::fs::rename(self.staging.join(name), self.dest.join(name))
                .with_context(|| format!("failed to move {} into place", self.dest.join(name).display()))?;
        }
        for name in &names {
            let dest = self.dest.join(name);
            // The staging directory is private and some writers create private files; an
            // output gets the permissions a new file would.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644));
            }
            record_written(&dest);
        }
        self.committed = true;
        let _ = std::fs::remove_dir(&self.staging);
        untrack_temporary(&self.staging);
        Ok(())
    }

    /// The result cannot go to the destination: it is kept beside it, under a name that is said.
    fn keep_aside(mut self, conflict: &Path) -> Result<()> {
        let kept = kept_name(&self.dest);
        std::fs::rename(&self.staging, &kept)
            .with_context(|| format!("failed to keep the result at {}", kept.display()))?;
        self.committed = true;
        untrack_temporary(&self.staging);
        bail!(
            "{} appeared (or changed) while alens worked and was left as it is; this run's result is in {}",
            conflict.display(),
            kept.display()
        )
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed && self.temporary {
            let _ = std::fs::remove_dir_all(&self.staging);
            untrack_temporary(&self.staging);
        }
    }
}

/// `dest`'s parent (`.` for a bare name) and file name.
fn parent_and_name(dest: &Path) -> Result<(PathBuf, String)> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .with_context(|| format!("not a directory path alens can stage: {}", dest.display()))?;
    Ok((parent, name.to_string_lossy().into_owned()))
}

/// The entries of `dir` now, by name (none when it does not exist).
fn found_in(dir: &Path) -> BTreeMap<OsString, FileIdentity> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name(), FileIdentity::at(&entry.path())?)))
        .collect()
}

/// Renames `from` to `to` unless something is at `to` (then `AlreadyExists`, `from` kept).
fn rename_noclobber(from: &Path, to: &Path) -> std::io::Result<()> {
    tempfile::TempPath::try_from_path(from)?
        .persist_noclobber(to)
        .map_err(|e| {
            let _ = e.path.keep();
            e.error
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_committed_directory_holds_the_files_and_nothing_else_is_left() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("report");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("notes.txt"), "a user's").unwrap();
        let staged = StagedDir::create(&dest).unwrap();
        std::fs::write(staged.path().join("index.html"), "page").unwrap();
        std::fs::write(staged.path().join("a.png"), "figure").unwrap();
        staged.commit().unwrap();
        assert_eq!(names(root.path()), ["report"]);
        assert_eq!(names(&dest), ["a.png", "index.html", "notes.txt"]);
        assert_eq!(std::fs::read(dest.join("notes.txt")).unwrap(), b"a user's");
    }

    #[test]
    fn an_uncommitted_directory_is_removed_and_the_destination_never_made() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("model");
        let staged = StagedDir::create(&dest).unwrap();
        std::fs::write(staged.path().join("config.json"), "{}").unwrap();
        drop(staged);
        assert!(names(root.path()).is_empty());
    }

    #[test]
    fn a_file_that_appears_meanwhile_is_kept_and_nothing_moves_in() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        let staged = StagedDir::create(&dest).unwrap();
        std::fs::write(staged.path().join("a.json"), "ours").unwrap();
        std::fs::write(staged.path().join("b.json"), "ours").unwrap();
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("b.json"), "theirs").unwrap();
        let err = staged.commit().unwrap_err().to_string();
        assert!(err.contains("appeared"), "{err}");
        assert_eq!(names(&dest), ["b.json"], "all or nothing");
        assert_eq!(std::fs::read(dest.join("b.json")).unwrap(), b"theirs");
        let kept: Vec<String> = names(root.path()).into_iter().filter(|n| n != "out").collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(err.contains(&kept[0]), "the kept name is said: {err}");
        assert_eq!(names(&root.path().join(&kept[0])), ["a.json", "b.json"]);
    }

    #[test]
    fn a_resumable_directory_is_claimed_once_and_held_for_resume() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("adapter");
        let mut first = StagedDir::resumable(&dest, false).unwrap();
        assert_eq!(first.path(), root.path().join("adapter.partial"));
        assert!(
            StagedDir::resumable(&dest, false).is_err(),
            "a fresh claim on a used name"
        );
        assert!(StagedDir::resumable(&dest, true)
            .err()
            .unwrap()
            .to_string()
            .contains("another alens run"));
        std::fs::write(first.path().join("trainer_state.json"), "{}").unwrap();
        first.hold();
        drop(first);
        let err = StagedDir::resumable(&dest, false).err().unwrap().to_string();
        assert!(err.contains("--resume"), "{err}");
        let again = StagedDir::resumable(&dest, true).unwrap();
        assert_eq!(names(again.path()), ["trainer_state.json"]);
        again.commit().unwrap();
        assert_eq!(names(root.path()), ["adapter"]);

        // Not held: an unfinished fresh run leaves nothing.
        let other = root.path().join("other");
        drop(StagedDir::resumable(&other, false).unwrap());
        assert_eq!(names(root.path()), ["adapter"]);
        // A symbolic link in its place is refused and left alone.
        std::os::unix::fs::symlink(root.path().join("adapter"), root.path().join("third.partial")).unwrap();
        assert!(StagedDir::resumable(&root.path().join("third"), true).is_err());
        assert!(root.path().join("third.partial").is_symlink());
    }
}
