//! Writing outputs: atomically (temp file + rename, so a crash never leaves half a file where
//! a good one was), and tensors streamed row by row so memory does not grow with the data.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What the host process keeps about the files alens writes: the temporaries in flight (so
/// a signal handler can remove them: Drop does not run when a signal ends the process) and a
/// ledger of finished outputs (so a later run may replace its own outputs and nothing else).
/// A library must not set this up behind its host's back: the binary, or the Python module,
/// installs one with [`install_host`] at start-up. Without one, temporaries are still removed
/// by their guards and an existing output is never taken for alens' own.
pub trait OutputHost: Send + Sync {
    /// `path` is a temporary (file or directory) that must not outlive the process.
    fn staging(&self, path: &Path);
    /// `path` was committed, or removed by its guard.
    fn unstaged(&self, path: &Path);
    /// alens just finished writing `path`.
    fn written(&self, path: &Path);
    /// Whether `path` holds exactly what alens last wrote there.
    fn written_by_alens(&self, path: &Path) -> bool;
}

static HOST: std::sync::OnceLock<Box<dyn OutputHost>> = std::sync::OnceLock::new();

mod set;
mod staged;
pub use set::OutputSet;
pub use staged::StagedDir;

/// Held while an output moves into place. A signal handler takes it before it removes the
/// temporaries, so an interruption lands before a commit or after it, never halfway through
/// (a temporary already untracked but not yet renamed, a directory half moved in).
pub fn commit_lock() -> std::sync::MutexGuard<'static, ()> {
    COMMITTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`commit_lock`], and whether a commit was under way (so the output it moved is whole).
pub fn commit_lock_after_any() -> (std::sync::MutexGuard<'static, ()>, bool) {
    match COMMITTING.try_lock() {
        Ok(guard) => (guard, false),
        Err(std::sync::TryLockError::Poisoned(e)) => (e.into_inner(), false),
        Err(std::sync::TryLockError::WouldBlock) => (commit_lock(), true),
    }
}

static COMMITTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Installs the host's [`OutputHost`]; false when one was installed already.
pub fn install_host(host: Box<dyn OutputHost>) -> bool {
    HOST.set(host).is_ok()
}

/// Marks `path` as a temporary that must not outlive the process.
pub fn track_temporary(path: &Path) {
    if let Some(host) = HOST.get() {
        host.staging(path);
    }
}

/// Forgets `path` (it was committed, or removed by its guard).
pub fn untrack_temporary(path: &Path) {
    if let Some(host) = HOST.get() {
        host.unstaged(path);
    }
}

/// Records that alens just wrote `path` (a file a library wrote by other means, a figure).
pub fn record_written(path: &Path) {
    if let Some(host) = HOST.get() {
        host.written(path);
    }
}

/// Whether `path` holds exactly what alens last wrote there, so replacing it destroys
/// nothing a user made.
pub fn written_by_alens(path: &Path) -> bool {
    HOST.get().is_some_and(|host| host.written_by_alens(path))
}

/// A file being written under a temporary name beside its destination; `commit` renames it
/// into place. Dropped without commit (an error, a panic), the temp file is removed and the
/// destination untouched: `tempfile::NamedTempFile` does the cleanup and the rename.
pub struct AtomicFile {
    /// `None` once committed.
    temp: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
    /// What stood at `dest` when the write began (an output the command may replace): what
    /// appears or changes there meanwhile is never silently replaced.
    found: Option<FileIdentity>,
}

/// What tells one file at a path from another: device, inode, length, modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity(u64, u64, u64, Option<std::time::SystemTime>);

impl FileIdentity {
    fn at(path: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Some(Self(dev, ino, meta.len(), meta.modified().ok()))
    }
}

/// Opens a path alens derives from an output the user named (a staging file, a journal) for
/// this run alone. It is never followed through a symbolic link, never a file that is already
/// there unless `existing` says this run continues it, and it is held under an exclusive lock
/// while the returned file is open, so two runs never write into one.
pub fn open_derived(path: &Path, existing: bool) -> Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            bail!("refusing to use {}: it is a symbolic link (alens names this file after the output and writes it itself)", path.display())
        }
        Ok(meta) if !meta.is_file() => bail!("refusing to use {}: it exists and is not a regular file", path.display()),
        Ok(_) if !existing => bail!(
            "refusing to replace {}: it exists and is not this run's (another run's, or a user's file); delete it or choose another output",
            path.display()
        ),
        Err(_) if existing => bail!("{} disappeared while alens was using it", path.display()),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    if !existing {
        // Two runs that both passed the check above: only one creates the file.
        options.create_new(true);
    }
    let file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "another alens run is writing {}; wait for it or choose another output",
            path.display()
        ),
        _ => anyhow::anyhow!("failed to open {}: {e}", path.display()),
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "another alens run is writing {}; wait for it or choose another output",
                path.display()
            )
        }
        // A file system without locks: the exclusive creation above still keeps two fresh
        // runs apart.
        Err(std::fs::TryLockError::Error(_)) => Ok(file),
    }
}

impl AtomicFile {
    pub fn create(dest: &Path) -> Result<Self> {
        Self::create_with_suffix(dest, ".tmp".into())
    }

    /// As [`AtomicFile::create`], with a temporary whose name ends in `dest`'s extension, for a
    /// writer that picks its format by the name (plotters' PNG and SVG backends).
    pub fn create_keeping_extension(dest: &Path) -> Result<Self> {
        let extension = dest.extension().map(|e| e.to_string_lossy().into_owned());
        Self::create_with_suffix(dest, extension.map_or(".tmp".into(), |e| format!(".tmp.{e}")))
    }

    fn create_with_suffix(dest: &Path, suffix: String) -> Result<Self> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).with_context(|| format!("failed to create directory {}", dir.display()))?;
        }
        let name = dest
            .file_name()
            .with_context(|| format!("not a file path: {}", dest.display()))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(&suffix)
            .tempfile_in(&dir)
            .with_context(|| format!("failed to create a temporary file in {}", dir.display()))?;
        track_temporary(temp.path());
        Ok(Self {
            temp: Some(temp),
            dest: dest.to_path_buf(),
            found: FileIdentity::at(dest),
        })
    }

    /// Like [`AtomicFile::create`], but the temporary has a fixed name, `staging`, so that a
    /// run killed outright can find it again; `reuse` continues the file there instead of
    /// starting empty. Dropped uncommitted, it is removed like any temporary.
    /// `staging` is claimed with [`open_derived`]: a file already there is continued only
    /// with `reuse`, and the caller checks that it is this run's.
    pub fn staged(dest: &Path, staging: &Path, reuse: bool) -> Result<Self> {
        let file = open_derived(staging, reuse)?;
        track_temporary(staging);
        let temp = tempfile::NamedTempFile::from_parts(file, tempfile::TempPath::try_from_path(staging)?);
        Ok(Self {
            temp: Some(temp),
            dest: dest.to_path_buf(),
            found: FileIdentity::at(dest),
        })
    }

    fn temp(&self) -> &tempfile::NamedTempFile {
        self.temp.as_ref().expect("the temporary lives until commit")
    }

    pub fn file(&mut self) -> &mut File {
        self.temp
            .as_mut()
            .expect("the temporary lives until commit")
            .as_file_mut()
    }

    pub fn temp_path(&self) -> &Path {
        self.temp().path()
    }

    pub fn commit(self) -> Result<()> {
        self.sync()?;
        let _commits = commit_lock();
        self.persist()
    }

    fn sync(&self) -> Result<()> {
        self.temp()
            .as_file()
            .sync_all()
            .with_context(|| format!("failed to flush {}", self.temp_path().display()))
    }

    /// Whether what stands at the destination is what stood there when the work began.
    fn unchanged(&self) -> bool {
        FileIdentity::at(&self.dest) == self.found
    }

    /// Moves the result into place; the caller holds [`commit_lock`].
    fn persist(mut self) -> Result<()> {
        let temp = self.temp.take().expect("commit once");
        untrack_temporary(temp.path());
        // What stands at the destination now must be what stood there when the work began
        // (and what the command's checks accepted): nothing, and then the rename must not
        // clobber what appears meanwhile, or the same file. Otherwise the result is kept
        // beside it, under a name that is said.
        let now = FileIdentity::at(&self.dest);
        let persisted = if now != self.found {
            Err(temp)
        } else if self.found.is_some() {
            temp.persist(&self.dest)
                .map_err(|e| e.error)
                .with_context(|| format!("failed to move {} into place", self.dest.display()))?;
            Ok(())
        } else {
            match temp.persist_noclobber(&self.dest) {
                Ok(_) => Ok(()),
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Err(e.file),
                Err(e) => {
                    return Err(e.error)
                        .with_context(|| format!("failed to move the output into place at {}", self.dest.display()))
                }
            }
        };
        if let Err(temp) = persisted {
            let kept = keep_beside(temp, &self.dest)?;
            bail!(
                "{} appeared (or changed) while alens worked and was left as it is; this run's result is in {}",
                self.dest.display(),
                kept.display()
            );
        }
        record_written(&self.dest);
        // NamedTempFile creates files 0600 (and a writer may have replaced the file at the temp
        // path); an output gets the permissions a new file would.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.dest, std::fs::Permissions::from_mode(0o644));
        }
        Ok(())
    }

    /// Keeps the result beside its destination under a free name, which it returns; the
    /// caller holds [`commit_lock`].
    fn keep_aside(mut self) -> Result<PathBuf> {
        let temp = self.temp.take().expect("commit once");
        untrack_temporary(temp.path());
        keep_beside(temp, &self.dest)
    }
}

fn keep_beside(temp: tempfile::NamedTempFile, dest: &Path) -> Result<PathBuf> {
    let kept = kept_name(dest);
    temp.persist_noclobber(&kept)
        .map_err(|e| e.error)
        .with_context(|| format!("failed to keep the result at {}", kept.display()))?;
    record_written(&kept);
    Ok(kept)
}

/// A free name beside `dest` for a result that could not go to `dest`.
fn kept_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut k = 0;
    loop {
        let candidate = dest.with_file_name(format!(
            "{name}.alens-{}{}",
            std::process::id(),
            if k == 0 { String::new() } else { format!("-{k}") }
        ));
        if std::fs::symlink_metadata(&candidate).is_err() {
            return candidate;
        }
        k += 1;
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // NamedTempFile removes an uncommitted file itself; only the registry needs updating.
        if let Some(temp) = &self.temp {
            untrack_temporary(temp.path());
        }
    }
}

/// Writes `dest` atomically through `write`, a writer that takes a path (a figure drawn by
/// viz: plotters picks the format by the extension, which the temporary keeps) and returns
/// what it returns.
pub fn write_through<T>(dest: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let out = AtomicFile::create_keeping_extension(dest)?;
    let value = write(out.temp_path())?;
    out.commit()?;
    Ok(value)
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = AtomicFile::create(dest)?;
    out.file()
        .write_all(bytes)
        .with_context(|| format!("failed to write {}", dest.display()))?;
    out.commit()
}

/// Element type of a streamed tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    F32,
    I64,
}

impl ElementType {
    fn size(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::I64 => 8,
        }
    }
    fn safetensors_name(self) -> &'static str {
        match self {
            ElementType::F32 => "F32",
            ElementType::I64 => "I64",
        }
    }
    fn numpy_descr(self) -> &'static str {
        match self {
            ElementType::F32 => "<f4",
            ElementType::I64 => "<i8",
        }
    }
}

/// Declares one output tensor before any data is written.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: ElementType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            dtype: ElementType::F32,
            shape,
        }
    }
    pub fn i64(name: impl Into<String>, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            dtype: ElementType::I64,
            shape,
        }
    }
    fn row_bytes(&self) -> usize {
        self.shape.iter().skip(1).product::<usize>() * self.dtype.size()
    }
    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// Output container, chosen by the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorFormat {
    Safetensors,
    Npz,
}

impl TensorFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(Self::Safetensors),
            Some("npz") => Ok(Self::Npz),
            _ => bail!("output {} must end in .safetensors or .npz", path.display()),
        }
    }
}

/// A set of tensors whose shapes are known up front, filled row block by row block in any
/// order. The data goes straight to disk at its final offset, so memory stays flat however
/// many records are captured. Safetensors are written in place; npz is assembled on `finish`
/// by streaming each tensor from the staging file into a stored zip entry.
pub struct TensorFileWriter {
    out: AtomicFile,
    format: TensorFormat,
    specs: Vec<TensorSpec>,
    /// name -> (index in specs, byte offset of the tensor's data in the staging file).
    offsets: BTreeMap<String, (usize, u64)>,
    data_start: u64,
    dest: PathBuf,
}

impl TensorFileWriter {
    pub fn create(dest: &Path, specs: Vec<TensorSpec>, metadata: &BTreeMap<String, String>) -> Result<Self> {
        Self::create_with(dest, specs, metadata, None)
    }

    /// A safetensors output written in place at the fixed path `staging` (see
    /// [`AtomicFile::staged`]): with `reuse`, the rows an interrupted run wrote there stay,
    /// once its header is found to be this run's.
    pub fn create_resumable(
        dest: &Path,
        specs: Vec<TensorSpec>,
        metadata: &BTreeMap<String, String>,
        staging: &Path,
        reuse: bool,
    ) -> Result<Self> {
        if TensorFormat::from_path(dest)? != TensorFormat::Safetensors {
            bail!("a resumable output must be .safetensors, not {}", dest.display());
        }
        Self::create_with(dest, specs, metadata, Some((staging, reuse)))
    }

    fn create_with(
        dest: &Path,
        specs: Vec<TensorSpec>,
        metadata: &BTreeMap<String, String>,
        staged: Option<(&Path, bool)>,
    ) -> Result<Self> {
        let format = TensorFormat::from_path(dest)?;
        // npz is staged as raw data beside the destination, then zipped into place.
        let staging = match format {
            TensorFormat::Safetensors => dest.to_path_buf(),
            TensorFormat::Npz => dest.with_extension("npz-staging"),
        };
        let reuse = staged.is_some_and(|(_, reuse)| reuse);
        let mut out = match staged {
            Some((path, reuse)) => AtomicFile::staged(&staging, path, reuse)?,
            None => AtomicFile::create(&staging)?,
        };
        let mut offsets = BTreeMap::new();
        let mut header = serde_json::Map::new();
        let mut cursor = 0u64;
        for (i, spec) in specs.iter().enumerate() {
            let end = cursor + spec.bytes() as u64;
            header.insert(
                spec.name.clone(),
                serde_json::json!({"dtype": spec.dtype.safetensors_name(), "shape": spec.shape, "data_offsets": [cursor, end]}),
            );
            if offsets.insert(spec.name.clone(), (i, cursor)).is_some() {
                bail!("tensor {} declared twice", spec.name);
            }
            cursor = end;
        }
        let data_start = match format {
            TensorFormat::Safetensors => {
                header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
                let mut json = serde_json::to_vec(&header)?;
                // The data section must start 8-byte aligned; pad the header with spaces.
                while (8 + json.len()) % 8 != 0 {
                    json.push(b' ');
                }
                let mut head = (json.len() as u64).to_le_bytes().to_vec();
                head.extend_from_slice(&json);
                let f = out.file();
                if reuse {
                    let mut found = vec![0u8; head.len()];
                    let same = f.read_exact(&mut found).is_ok()
                        && found == head
                        && f.metadata()?.len() == head.len() as u64 + cursor;
                    if !same {
                        bail!("{} is not this run's partial output (other data, model or options); delete it to start over", staging_name(&out));
                    }
                } else {
                    f.write_all(&head)?;
                }
                head.len() as u64
            }
            TensorFormat::Npz => 0,
        };
        out.file()
            .set_len(data_start + cursor)
            .context("failed to size output file")?;
        // The rows are written at their final offsets; a resumed file is already this size.
        Ok(Self {
            out,
            format,
            specs,
            offsets,
            data_start,
            dest: dest.to_path_buf(),
        })
    }

    /// Flushes what was written to disk (before a journal says it is done).
    pub fn sync(&mut self) -> Result<()> {
        self.out.file().sync_data().context("failed to sync the output")
    }

    /// Writes consecutive rows starting at `first_row` of tensor `name`.
    pub fn write_f32_rows(&mut self, name: &str, first_row: usize, data: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_rows(name, ElementType::F32, first_row, &bytes)
    }

    pub fn write_i64_rows(&mut self, name: &str, first_row: usize, data: &[i64]) -> Result<()> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_rows(name, ElementType::I64, first_row, &bytes)
    }

    fn write_rows(&mut self, name: &str, dtype: ElementType, first_row: usize, bytes: &[u8]) -> Result<()> {
        let &(index, offset) = self
            .offsets
            .get(name)
            .with_context(|| format!("no tensor {name} declared"))?;
        let spec = &self.specs[index];
        if spec.dtype != dtype {
            bail!("tensor {name} is {:?}, not {dtype:?}", spec.dtype);
        }
        let row_bytes = spec.row_bytes().max(dtype.size());
        let start = first_row * row_bytes;
        if !bytes.len().is_multiple_of(row_bytes) || start + bytes.len() > spec.bytes() {
            bail!(
                "write of {} bytes at row {first_row} does not fit tensor {name} {:?}",
                bytes.len(),
                spec.shape
            );
        }
        let pos = self.data_start + offset + start as u64;
        let f = self.out.file();
        f.seek(SeekFrom::Start(pos))?;
        f.write_all(bytes)
            .with_context(|| format!("failed to write tensor {name}"))?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        match self.format {
            TensorFormat::Safetensors => self.out.commit(),
            TensorFormat::Npz => {
                let staging = self.out.temp_path().to_path_buf();
                let mut zipped = AtomicFile::create(&self.dest)?;
                {
                    let raw = self.out.file();
                    raw.flush()?;
                    let mut zip = zip::ZipWriter::new(BufWriter::new(zipped.file()));
                    let options = zip::write::SimpleFileOptions::default()
                        .compression_method(zip::CompressionMethod::Stored)
                        .large_file(true);
                    for spec in &self.specs {
                        let (_, offset) = self.offsets[&spec.name];
                        zip.start_file(format!("{}.npy", spec.name), options)?;
                        zip.write_all(&npy_header(spec))?;
                        raw.seek(SeekFrom::Start(offset))?;
                        std::io::copy(&mut Read::by_ref(raw).take(spec.bytes() as u64), &mut zip)?;
                    }
                    zip.finish()?.flush()?;
                }
                zipped.commit()?;
                drop(self.out);
                let _ = std::fs::remove_file(staging);
                Ok(())
            }
        }
    }
}

fn staging_name(out: &AtomicFile) -> String {
    out.temp_path().display().to_string()
}

/// Writes one f32 array as a `.npy` file (for notebooks), atomically.
pub fn write_npy_f32(dest: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_atomic(dest, &npy_f32(shape, data)?)
}

/// One f32 array as the bytes of a `.npy` file.
pub fn npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    if shape.iter().product::<usize>() != data.len() {
        bail!("npy shape {shape:?} does not match {} values", data.len());
    }
    let mut bytes = npy_header(&TensorSpec::f32("array", shape.to_vec()));
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    Ok(bytes)
}

/// NPY format 1.0 header, padded so the data starts 64-byte aligned.
fn npy_header(spec: &TensorSpec) -> Vec<u8> {
    let shape = match spec.shape.len() {
        1 => format!("({},)", spec.shape[0]),
        _ => format!(
            "({})",
            spec.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        spec.dtype.numpy_descr()
    );
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_written_out_of_order_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let specs = vec![TensorSpec::f32("a", vec![3, 2]), TensorSpec::i64("ids", vec![3])];
        let mut w = TensorFileWriter::create(&path, specs, &BTreeMap::new()).unwrap();
        w.write_f32_rows("a", 2, &[5.0, 6.0]).unwrap();
        w.write_f32_rows("a", 0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
        w.write_i64_rows("ids", 0, &[7, 8, 9]).unwrap();
        assert!(w.write_f32_rows("a", 3, &[0.0, 0.0]).is_err());
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let a: Vec<f32> = st
            .tensor("a")
            .unwrap()
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(a, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(st.tensor("ids").unwrap().shape(), &[3]);
    }

    #[test]
    fn a_file_that_appears_at_the_destination_meanwhile_is_kept_and_the_result_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut w = AtomicFile::create(&path).unwrap();
        w.file().write_all(b"ours").unwrap();
        std::fs::write(&path, b"theirs").unwrap();
        let err = w.commit().unwrap_err().to_string();
        assert!(err.contains("appeared"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &path)
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(std::fs::read(&kept[0]).unwrap(), b"ours");
        assert!(
            err.contains(&kept[0].display().to_string()),
            "the kept name is said: {err}"
        );
    }

    #[test]
    fn a_derived_path_is_claimed_by_one_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.partial");
        let first = open_derived(&path, false).unwrap();
        assert!(open_derived(&path, false).is_err(), "a second fresh claim must fail");
        assert!(open_derived(&path, true)
            .unwrap_err()
            .to_string()
            .contains("another alens run"));
        drop(first);
        assert!(open_derived(&path, true).is_ok(), "continued once the first run let go");
    }

    #[test]
    fn unfinished_write_leaves_destination_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keep.safetensors");
        std::fs::write(&path, b"old").unwrap();
        let w = TensorFileWriter::create(&path, vec![TensorSpec::f32("a", vec![1, 1])], &BTreeMap::new()).unwrap();
        drop(w);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

/// Refuses, before any work, every output path that would destroy something the user points
/// at: one that is (or resolves to, through symlinks or `..`) an input of the command, a file
/// inside an input directory (a model's own files), or an existing thing that is not a regular
/// file (a directory, a device such as /dev/null, a FIFO). A new path, or a regular file the
/// command may replace, passes. Outputs that name each other are refused too.
pub fn check_outputs(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    let inputs: Vec<(PathBuf, bool)> = inputs
        .iter()
        .filter_map(|p| resolve(p).ok().map(|r| (r, p.is_dir())))
        .collect();
    let mut seen: Vec<PathBuf> = Vec::new();
    for out in outputs {
        if out.as_os_str().as_encoded_bytes().ends_with(b"/") {
            bail!("refusing to write {}: it names a directory, not a file", out.display());
        }
        let resolved = resolve(out).with_context(|| format!("cannot use {} as an output", out.display()))?;
        if std::fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink()) && std::fs::metadata(out).is_err() {
            bail!(
                "refusing to write {}: it is a symbolic link to nothing (a dangling link is not replaced)",
                out.display()
            );
        }
        if let Ok(meta) = std::fs::metadata(out) {
            if !meta.is_file() {
                bail!(
                    "refusing to write {}: it exists and is not a regular file",
                    out.display()
                );
            }
            if !written_by_alens(out) {
                bail!("refusing to overwrite {}: it exists and alens did not write it (or it changed since); delete it or choose another path", out.display());
            }
        }
        for (input, is_dir) in &inputs {
            if &resolved == input {
                bail!("refusing to write {}: it is an input of this command", out.display());
            }
            if *is_dir && resolved.starts_with(input) {
                bail!(
                    "refusing to write {}: it is inside the input directory {}",
                    out.display(),
                    input.display()
                );
            }
        }
        if seen.contains(&resolved) {
            bail!("two outputs of this command are the same file: {}", out.display());
        }
        check_writable_parent(&resolved).with_context(|| format!("cannot write {}", out.display()))?;
        seen.push(resolved);
    }
    Ok(())
}

/// Whether a file can be created where `resolved` (absolute, resolved) will go: its deepest
/// existing ancestor is a directory that takes a new file (a read-only file system, a parent
/// that is a file or a directory without write permission fail here, before any work, rather
/// than after it).
fn check_writable_parent(resolved: &Path) -> Result<()> {
    let mut dir = resolved.parent();
    while let Some(d) = dir {
        match std::fs::metadata(d) {
            Ok(meta) if meta.is_dir() => {
                tempfile::Builder::new()
                    .prefix(".alens-check-")
                    .tempfile_in(d)
                    .map_err(|e| anyhow::anyhow!("{} does not take new files: {e}", d.display()))?;
                return Ok(());
            }
            Ok(_) => bail!("{} is not a directory", d.display()),
            Err(_) => dir = d.parent(),
        }
    }
    Ok(())
}

/// The same for an output directory (a checkpoint, an adapter, a report): refused when it is
/// an input, inside an input directory, or exists and is not a directory; and, as for a file
/// output, when one of the `files` the command writes there is already there and alens did
/// not write it (another tool's adapter, a user's `index.html`).
pub fn check_output_dir(dir: &Path, inputs: &[&Path], files: &[&str]) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) && !dir.exists() {
        bail!(
            "refusing to write into {}: it is a symbolic link to nothing (a dangling link is not replaced)",
            dir.display()
        );
    }
    if dir.exists() && !dir.is_dir() {
        bail!(
            "refusing to write into {}: it exists and is not a directory",
            dir.display()
        );
    }
    for name in files {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok() && !(path.is_file() && written_by_alens(&path)) {
            bail!(
                "refusing to write into {}: its {name} exists and alens did not write it (or it changed since); move it or choose another directory",
                dir.display()
            );
        }
    }
    let resolved = resolve(dir)?;
    for input in inputs {
        let Ok(input_path) = resolve(input) else { continue };
        if resolved == input_path || (input.is_dir() && resolved.starts_with(&input_path)) {
            bail!(
                "refusing to write into {}: it is (inside) the input {}",
                dir.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// `path` made absolute with symlinks and `..` resolved, for a path that may not exist yet:
/// the deepest existing ancestor is canonicalised and the rest appended.
pub(crate) fn resolve(path: &Path) -> Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    if let Ok(real) = absolute.canonicalize() {
        return Ok(real);
    }
    let mut tail = Vec::new();
    let mut head = absolute.as_path();
    loop {
        if let Ok(real) = head.canonicalize() {
            let mut out = real;
            for part in tail.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return Ok(out);
        }
        match (head.parent(), head.components().next_back()) {
            (Some(parent), Some(last)) => {
                tail.push(last);
                head = parent;
            }
            _ => bail!("cannot resolve {}", path.display()),
        }
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn outputs_that_would_destroy_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d.jsonl");
        std::fs::write(&data, "{}").unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        let new = dir.path().join("new.json");
        assert!(check_outputs(&[&new], &[&data, &model]).is_ok());
        assert!(check_outputs(&[&data], &[&data]).is_err(), "the input itself");
        let dotted = dir.path().join("model/../d.jsonl");
        assert!(check_outputs(&[&dotted], &[&data]).is_err(), "through ..");
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(check_outputs(&[&link], &[&data]).is_err(), "through a symlink");
        assert!(
            check_outputs(&[&model.join("config.json")], &[&model]).is_err(),
            "inside the model"
        );
        assert!(check_outputs(&[Path::new("/dev/null")], &[]).is_err(), "a device");
        assert!(check_outputs(&[&model], &[]).is_err(), "a directory");
        assert!(check_outputs(&[&new, &new], &[]).is_err(), "twice");
        let slash = PathBuf::from(format!("{}/", dir.path().join("sub").display()));
        assert!(check_outputs(&[&slash], &[]).is_err(), "a directory's name");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(
            check_output_dir(&dangling, &[], &[]).is_err(),
            "a dangling link as a directory"
        );
    }
}
