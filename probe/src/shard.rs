//! Sharding a run over records, for a cluster's job array: `--shard I/N` takes the I-th of N
//! contiguous blocks of the records in input order, and a shard's output carries a
//! [`ShardInfo`] saying which block it holds and what run it belongs to, so that a merge can
//! refuse a set that is missing a shard, holds one twice, or mixes runs.
//!
//! Every format keeps its own merge next to it (capture here in `probe`, eval and sweep in
//! `steer`); this module only knows specs, blocks and whether a set of shards is whole.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// `I/N`: shard `index` of `count`, 0 <= index < count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for ShardSpec {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<Self> {
        let bad = || anyhow::anyhow!("bad shard {spec:?}: expected I/N with 0 <= I < N, such as 0/4");
        let (index, count) = spec.split_once('/').ok_or_else(bad)?;
        // Digits only: `+1/2` or ` 1/2` would parse as numbers and name a shard no one typed.
        let number = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<usize>().map_err(|_| bad())
        };
        let (index, count) = (number(index)?, number(count)?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl ShardSpec {
    /// This shard's block of `total` records: the blocks are contiguous, in input order, and
    /// differ in size by at most one; with more shards than records some blocks are empty.
    pub fn range(&self, total: usize) -> Range<usize> {
        let cut = |k: usize| (total as u128 * k as u128 / self.count as u128) as usize;
        cut(self.index)..cut(self.index + 1)
    }

    /// As [`range`](Self::range), in whole batches of `batch_size` records: generation pads
    /// each batch to its longest prompt, so a record's output is the unsharded run's to the bit
    /// only when it meets the same batch.
    pub fn batch_range(&self, total: usize, batch_size: usize) -> Range<usize> {
        let batch_size = batch_size.max(1);
        let batches = self.range(total.div_ceil(batch_size));
        (batches.start * batch_size).min(total)..(batches.end * batch_size).min(total)
    }
}

/// What a shard's output records about itself: which block of which run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// capture, eval, sweep or lat.
    pub kind: String,
    /// `I/N`.
    pub spec: String,
    /// The block: records `first..first + records` of `total`.
    pub first: usize,
    pub records: usize,
    pub total: usize,
    /// sha256 of the data file.
    pub data_sha256: String,
    /// The model's content hash (as in the provenance).
    pub model: String,
    /// Everything else that determines the result: the run's options.
    pub options: serde_json::Value,
    pub alens_version: String,
}

impl ShardInfo {
    pub fn spec(&self) -> Result<ShardSpec> {
        self.spec.parse()
    }
}

/// Checks that `shards` (file, info) are exactly shards 0..N of one run, given in any order,
/// and returns them in shard order. Every refusal names the file and the problem.
pub fn check_set(mut shards: Vec<(PathBuf, ShardInfo)>) -> Result<Vec<(PathBuf, ShardInfo)>> {
    let Some((first_path, first)) = shards.first().cloned() else {
        bail!("no shard files to merge");
    };
    let count = first.spec()?.count;
    for (path, info) in &shards {
        let name = path.display();
        let differs = |what: &str| {
            anyhow::anyhow!(
                "{name} is from another run than {}: {what} differs",
                first_path.display()
            )
        };
        if info.kind != first.kind {
            bail!(
                "{name} is a {} shard, {} a {} shard",
                info.kind,
                first_path.display(),
                first.kind
            );
        }
        if info.alens_version != first.alens_version {
            return Err(differs("the alens version"));
        }
        if info.data_sha256 != first.data_sha256 || info.total != first.total {
            return Err(differs("the data"));
        }
        if info.model != first.model {
            return Err(differs("the model"));
        }
        if info.options != first.options {
            return Err(differs("an option"));
        }
        if info.spec()?.count != count {
            return Err(differs("the shard count"));
        }
    }
    shards.sort_by_key(|(_, info)| info.spec().map(|s| s.index).unwrap_or(usize::MAX));
    for pair in shards.windows(2) {
        if pair[0].1.spec == pair[1].1.spec {
            bail!(
                "shard {} is given twice: {} and {}",
                pair[0].1.spec,
                pair[0].0.display(),
                pair[1].0.display()
            );
        }
    }
    let have: Vec<usize> = shards
        .iter()
        .map(|(_, i)| i.spec().map(|s| s.index))
        .collect::<Result<_>>()?;
    if let Some(missing) = (0..count).find(|k| !have.contains(k)) {
        bail!("shard {missing}/{count} is missing ({} of {count} given)", shards.len());
    }
    let mut next = 0;
    for (path, info) in &shards {
        if info.first != next {
            bail!("{} holds records from {}, expected {next}", path.display(), info.first);
        }
        next += info.records;
    }
    if next != first.total {
        bail!("the shards hold {next} records, the run {}", first.total);
    }
    Ok(shards)
}

/// Shard files with what each says of itself, in shard order once checked.
pub type ShardSet = Vec<(PathBuf, ShardInfo)>;

/// The provenance entry of a merged output: the shard files, in shard order.
pub fn shard_list(shards: &[(PathBuf, ShardInfo)]) -> Vec<String> {
    shards
        .iter()
        .map(|(path, info)| format!("{} {}", info.spec, path.display()))
        .collect()
}

/// Reads a JSON shard (eval, sweep) and its `shard` entry.
pub fn read_json_shard(path: &Path) -> Result<(serde_json::Value, ShardInfo)> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a JSON shard", path.display()))?;
    let info = value
        .get("shard")
        .cloned()
        .with_context(|| format!("{} is not a shard output (it has no shard entry)", path.display()))?;
    let info: ShardInfo =
        serde_json::from_value(info).with_context(|| format!("{}: unreadable shard entry", path.display()))?;
    Ok((value, info))
}

/// Exact f64 in JSON: as its bits, since a decimal printed and parsed back may move by one ulp,
/// and a merged mean must be the unsharded one to the bit.
pub mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!("2/3".parse::<ShardSpec>().unwrap(), ShardSpec { index: 2, count: 3 });
        for bad in ["3/3", "0/0", "-1/2", "a/b", "1", "1/2/3", "+1/2", " 1/2", ""] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn blocks_cover_the_records_once() {
        for total in [0, 1, 2, 5, 10, 11] {
            for count in [1, 2, 3, 7] {
                let mut next = 0;
                for index in 0..count {
                    let r = ShardSpec { index, count }.range(total);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, total);
                let mut next = 0;
                for index in 0..count {
                    let r = ShardSpec { index, count }.batch_range(total, 4);
                    assert_eq!(r.start, next);
                    assert!(r.start.is_multiple_of(4) || r.start == total);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }
}
