//! Row stores on disk: Arrow IPC files of fixed-width f32 (or f16) rows plus u32 columns.
//!
//! One format serves the patch store (`patch` rows with `image`, `x`, `y` provenance)
//! and feature files (`features` rows with `image`, `label`). Rows are written in record
//! batches as they are produced (memory: one batch), to a temporary name that is renamed
//! into place only when the footer is written, so a crash never leaves a half file under
//! the final name. Reading memory-maps the file and decodes each batch zero-copy: the
//! rows are an `ArrayView2<f32>` straight into the page cache. Any Arrow reader (polars,
//! pyarrow) opens the files; the vector column is `FixedSizeList<Float32, D>`.
//!
//! Feature files may hold their values in f16 instead ([`Precision`]): half the disk and
//! half the bytes a classifier reads on each pass, which is what decides whether a wide
//! training file stays in the page cache. Readers of such a file convert each row to
//! f32 as they copy it ([`Row`]); patch stores stay f32, read in place by training.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, UInt32Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float16Array, Float32Array, RecordBatch, UInt32Array,
};
use arrow_buffer::Buffer;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::FileWriter;
use arrow_ipc::Block;
use arrow_schema::{DataType, Field, Schema};
use half::f16;
use half::slice::HalfFloatSliceExt;
use ndarray::{ArrayView2, Axis, CowArray, Ix2};
use serde::{Deserialize, Serialize};

use crate::data::preprocess::Normaliser;
use crate::error::{Error, Result};

/// Version of the store layout; bumped on incompatible change.
pub const FORMAT_VERSION: &str = "1";
const KEY_KIND: &str = "sae.kind";
const KEY_VERSION: &str = "sae.version";

/// What a store holds, with the names of its columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Training patches: `patch` rows, `image`, `x`, `y`.
    Patches,
    /// Image features: `features` rows, `image`, `label`.
    Features,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Patches => "patches",
            Kind::Features => "features",
        }
    }
    fn vector(self) -> &'static str {
        match self {
            Kind::Patches => "patch",
            Kind::Features => "features",
        }
    }
    /// Names of the u32 columns, in order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::Patches => &["image", "x", "y"],
            Kind::Features => &["image", "label"],
        }
    }
}

/// How a store keeps its row values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats: about three significant digits, magnitudes up to 65,504.
    F16,
}

impl Precision {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Precision::F32 => DataType::Float32,
            Precision::F16 => DataType::Float16,
        }
    }
}

/// One row of a store, in the precision the store keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Row<'a> {
    /// f32 values, borrowed from the map.
    F32(&'a [f32]),
    /// f16 values, borrowed from the map.
    F16(&'a [f16]),
}

impl Row<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Row::F32(v) => v.len(),
            Row::F16(v) => v.len(),
        }
    }

    /// Whether the row has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the values, as f32, into `out` (of the same length).
    pub fn copy_to(&self, out: &mut [f32]) {
        match self {
            Row::F32(v) => out.copy_from_slice(v),
            Row::F16(v) => v.convert_to_f32_slice(out),
        }
    }

    /// The values as f32.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        self.copy_to(&mut out);
        out
    }
}

fn schema(kind: Kind, dim: usize, precision: Precision, meta: &HashMap<String, String>) -> Schema {
    let item = Arc::new(Field::new("item", precision.data_type(), false));
    let mut fields = vec![Field::new(
        kind.vector(),
        DataType::FixedSizeList(item, dim as i32),
        false,
    )];
    fields.extend(
        kind.columns()
            .iter()
            .map(|c| Field::new(*c, DataType::UInt32, false)),
    );
    let mut meta = meta.clone();
    meta.insert(KEY_KIND.into(), kind.name().into());
    meta.insert(KEY_VERSION.into(), FORMAT_VERSION.into());
    Schema::new_with_metadata(fields, meta)
}

/// Writes a store batch by batch.
pub struct StoreWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: FileWriter<BufWriter<File>>,
    schema: Arc<Schema>,
    kind: Kind,
    dim: usize,
    precision: Precision,
    batch_rows: usize,
    values: Vec<f32>,
    cols: Vec<Vec<u32>>,
    rows: usize,
}

impl StoreWriter {
    /// Starts a store at `path` with rows of `dim` f32 values, flushed every
    /// `batch_rows` rows.
    pub fn create(
        path: &Path,
        kind: Kind,
        dim: usize,
        batch_rows: usize,
        meta: &HashMap<String, String>,
    ) -> Result<Self> {
        Self::create_as(path, kind, dim, Precision::F32, batch_rows, meta)
    }

    /// Like [`StoreWriter::create`], keeping the values in `precision` (f16 only for
    /// feature stores: training reads patch rows in place, as f32).
    pub fn create_as(
        path: &Path,
        kind: Kind,
        dim: usize,
        precision: Precision,
        batch_rows: usize,
        meta: &HashMap<String, String>,
    ) -> Result<Self> {
        assert!(dim > 0 && batch_rows > 0);
        assert!(
            kind == Kind::Features || precision == Precision::F32,
            "patch stores hold f32"
        );
        let tmp = path.with_extension("arrow.partial");
        let file = File::create(&tmp).map_err(Error::io(&tmp))?;
        let schema = Arc::new(schema(kind, dim, precision, meta));
        let writer = FileWriter::try_new(BufWriter::with_capacity(1 << 20, file), &schema)
            .map_err(|e| Error::bad(&tmp, format!("cannot start Arrow file: {e}")))?;
        Ok(StoreWriter {
            path: path.to_path_buf(),
            tmp,
            writer,
            schema,
            kind,
            dim,
            precision,
            batch_rows,
            values: Vec::with_capacity(batch_rows * dim),
            cols: vec![Vec::with_capacity(batch_rows); kind.columns().len()],
            rows: 0,
        })
    }

    /// Appends one row with its u32 columns (in [`Kind::columns`] order). In an f16
    /// store, a finite value beyond f16's range is an error, not an infinity.
    #[track_caller]
    pub fn push(&mut self, row: &[f32], aux: &[u32]) -> Result<()> {
        assert_eq!(row.len(), self.dim, "row width");
        assert_eq!(aux.len(), self.cols.len(), "column count");
        if self.precision == Precision::F16 {
            let max = f32::from(f16::MAX);
            if let Some(v) = row.iter().find(|v| v.is_finite() && v.abs() > max) {
                return Err(Error::bad(
                    &self.path,
                    format!(
                        "row {}: value {v} does not fit f16 (largest {max}); keep these \
                         features in f32 (features.precision = \"f32\", or --precision f32)",
                        self.rows
                    ),
                ));
            }
        }
        self.values.extend_from_slice(row);
        for (c, v) in self.cols.iter_mut().zip(aux) {
            c.push(*v);
        }
        self.rows += 1;
        if self.cols[0].len() == self.batch_rows {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Appends every row of `rows`, the u32 columns given as one slice per column.
    pub fn push_rows(&mut self, rows: ArrayView2<f32>, aux: &[&[u32]]) -> Result<()> {
        let mut vals = vec![0u32; aux.len()];
        for (i, r) in rows.axis_iter(Axis(0)).enumerate() {
            for (v, c) in vals.iter_mut().zip(aux) {
                *v = c[i];
            }
            match r.as_slice() {
                Some(s) => self.push(s, &vals)?,
                None => self.push(&r.to_vec(), &vals)?,
            }
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        let n = self.cols[0].len();
        if n == 0 {
            return Ok(());
        }
        let values = std::mem::take(&mut self.values);
        let values: ArrayRef = match self.precision {
            Precision::F32 => Arc::new(Float32Array::from(values)),
            Precision::F16 => {
                let mut half = vec![f16::ZERO; values.len()];
                half.convert_from_f32_slice(&values);
                drop(values);
                Arc::new(Float16Array::from(half))
            }
        };
        let item = Arc::new(Field::new("item", self.precision.data_type(), false));
        let list = FixedSizeListArray::try_new(item, self.dim as i32, values, None)
            .map_err(|e| Error::bad(&self.tmp, e.to_string()))?;
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(list)];
        for c in &mut self.cols {
            arrays.push(Arc::new(UInt32Array::from(std::mem::take(c))));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::bad(&self.tmp, e.to_string()))?;
        self.writer
            .write(&batch)
            .map_err(|e| Error::bad(&self.tmp, format!("write failed: {e}")))?;
        self.values = Vec::with_capacity(self.batch_rows * self.dim);
        self.cols = vec![Vec::with_capacity(self.batch_rows); self.kind.columns().len()];
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the last batch and the footer, syncs, and moves the file into place.
    pub fn finish(mut self) -> Result<usize> {
        self.flush_batch()?;
        self.writer
            .finish()
            .map_err(|e| Error::bad(&self.tmp, format!("write failed: {e}")))?;
        let buf = self
            .writer
            .into_inner()
            .map_err(|e| Error::bad(&self.tmp, format!("write failed: {e}")))?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::bad(&self.tmp, format!("write failed: {}", e.error())))?;
        file.sync_all().map_err(Error::io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(Error::io(&self.path))?;
        crate::fsio::sync_dir(&self.path)?;
        Ok(self.rows)
    }
}

/// What a patch store records about how its rows were made, so that training and
/// encoding apply exactly what sampling did. Kept in the store's schema metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchMeta {
    /// Patch side.
    pub patch: usize,
    /// Channels per pixel.
    pub channels: usize,
    /// Seed of the patch positions (not recorded by stores written by other tools).
    pub seed: Option<u64>,
    /// Normalisation fitted on the patches.
    pub norm: Normaliser,
    /// Hash of the config that made the store (empty outside a run): a run reuses a
    /// store only when it matches.
    pub config: String,
}

impl PatchMeta {
    const PATCH: &'static str = "sae.patch";
    const CHANNELS: &'static str = "sae.channels";
    const SEED: &'static str = "sae.seed";
    const NORM: &'static str = "sae.norm";
    const CONFIG: &'static str = "sae.config";

    /// The metadata entries to write.
    pub fn entries(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert(Self::PATCH.into(), self.patch.to_string());
        m.insert(Self::CHANNELS.into(), self.channels.to_string());
        if let Some(s) = self.seed {
            m.insert(Self::SEED.into(), s.to_string());
        }
        m.insert(
            Self::NORM.into(),
            serde_json::to_string(&self.norm).expect("normaliser serialises"),
        );
        if !self.config.is_empty() {
            m.insert(Self::CONFIG.into(), self.config.clone());
        }
        m
    }

    /// Reads the metadata of `store`, naming the store and the key on error.
    pub fn of(store: &Store) -> Result<PatchMeta> {
        let get = |k: &str| {
            store
                .meta(k)
                .ok_or_else(|| Error::bad(store.path(), format!("missing metadata {k}")))
        };
        let num = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .map_err(|_| Error::bad(store.path(), format!("bad {k}")))
        };
        let norm = serde_json::from_str(get(Self::NORM)?)
            .map_err(|e| Error::bad(store.path(), format!("bad {}: {e}", Self::NORM)))?;
        Ok(PatchMeta {
            patch: num(Self::PATCH)? as usize,
            channels: num(Self::CHANNELS)? as usize,
            seed: store
                .meta(Self::SEED)
                .map(|_| num(Self::SEED))
                .transpose()?,
            norm,
            config: store.meta(Self::CONFIG).unwrap_or_default().to_string(),
        })
    }
}

/// What a feature store records about how its rows were made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureMeta {
    /// Grid step (none for raw pixels).
    pub step: Option<usize>,
    /// Feature mode (`pool`, `concat`, `raw`).
    pub mode: String,
}

impl FeatureMeta {
    const STEP: &'static str = "sae.step";
    const MODE: &'static str = "sae.mode";

    /// The metadata entries to write.
    pub fn entries(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let Some(s) = self.step {
            m.insert(Self::STEP.into(), s.to_string());
        }
        m.insert(Self::MODE.into(), self.mode.clone());
        m
    }
}

/// A store opened for reading through a memory map.
pub struct Store {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    buffer: Buffer,
    decoder: FileDecoder,
    blocks: Vec<Block>,
    /// First row of each batch, plus the total at the end.
    starts: Vec<usize>,
    dim: usize,
    precision: Precision,
    kind: Kind,
    meta: HashMap<String, String>,
}

impl Store {
    /// Opens the store at `path`, which must hold `kind` rows.
    pub fn open(path: &Path, kind: Kind) -> Result<Store> {
        let bad = |p: String| Error::bad(path, p);
        let map = crate::mmap::map_file(path)?;
        let len = map.len();
        let buffer = Buffer::from(bytes::Bytes::from_owner(crate::mmap::MapOwner(map.clone())));
        if len < 16 || &buffer[..6] != b"ARROW1" {
            return Err(bad("not an Arrow IPC file".into()));
        }
        let trailer: [u8; 10] = buffer[len - 10..].try_into().expect("10 bytes");
        let footer_len = read_footer_length(trailer)
            .map_err(|e| Error::corrupt(path, format!("truncated or damaged (no footer: {e})")))?;
        if footer_len + 10 > len {
            return Err(Error::corrupt(
                path,
                "truncated or damaged (footer too long)",
            ));
        }
        let footer = arrow_ipc::root_as_footer(&buffer[len - 10 - footer_len..len - 10])
            .map_err(|e| Error::corrupt(path, format!("damaged footer: {e}")))?;
        let fb_schema = footer.schema().ok_or_else(|| bad("no schema".into()))?;
        let schema = arrow_ipc::convert::try_fb_to_schema(fb_schema)
            .map_err(|e| bad(format!("unreadable schema: {e}")))?;
        let meta: HashMap<String, String> = schema.metadata().clone().into_iter().collect();
        match meta.get(KEY_KIND) {
            Some(k) if k == kind.name() => {}
            Some(k) => return Err(bad(format!("holds {k}, expected {}", kind.name()))),
            None => return Err(bad("not an sae store (no sae.kind metadata)".into())),
        }
        match meta.get(KEY_VERSION) {
            Some(v) if v == FORMAT_VERSION => {}
            v => {
                return Err(Error::Incompatible {
                    path: path.to_path_buf(),
                    what: "store",
                    found: v.cloned().unwrap_or_else(|| "none".into()),
                    reads: format!("version {FORMAT_VERSION}"),
                    hint: "",
                })
            }
        }
        let (dim, precision) = match schema.fields().first().map(|f| f.data_type()) {
            Some(DataType::FixedSizeList(item, d)) if *d > 0 => {
                let precision = match item.data_type() {
                    DataType::Float32 => Precision::F32,
                    DataType::Float16 => Precision::F16,
                    t => return Err(bad(format!("rows hold {t}, not Float32 or Float16"))),
                };
                if kind == Kind::Patches && precision != Precision::F32 {
                    return Err(bad("holds f16 rows; patch stores must hold f32".into()));
                }
                (*d as usize, precision)
            }
            _ => return Err(bad("first column is not a FixedSizeList of floats".into())),
        };
        let names: Vec<&str> = schema
            .fields()
            .iter()
            .skip(1)
            .map(|f| f.name().as_str())
            .collect();
        if names != kind.columns() {
            return Err(bad(format!(
                "columns {names:?}, expected {:?}",
                kind.columns()
            )));
        }
        let blocks: Vec<Block> = footer
            .recordBatches()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        let decoder =
            FileDecoder::new(Arc::new(schema), footer.version()).with_require_alignment(true);
        let mut store = Store {
            path: path.to_path_buf(),
            map,
            buffer,
            decoder,
            blocks,
            starts: vec![0],
            dim,
            precision,
            kind,
            meta,
        };
        let mut total = 0;
        for i in 0..store.blocks.len() {
            let b = store.blocks[i];
            let end = b.offset() as u128 + b.metaDataLength() as u128 + b.bodyLength() as u128;
            if b.offset() < 0 || end > len as u128 {
                return Err(Error::corrupt(
                    path,
                    format!("batch {i} runs past the end (truncated)"),
                ));
            }
            total += store.batch(i)?.rows();
            store.starts.push(total);
        }
        store.release_all();
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Total rows.
    pub fn rows(&self) -> usize {
        *self.starts.last().expect("starts has the total")
    }

    /// What the store holds.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// How the store keeps its values.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Number of record batches.
    pub fn batches(&self) -> usize {
        self.blocks.len()
    }

    /// A metadata value written with the store.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta.get(key).map(String::as_str)
    }

    fn block_range(&self, i: usize) -> (usize, usize) {
        let b = &self.blocks[i];
        let len = b.metaDataLength() as usize + b.bodyLength() as usize;
        (b.offset() as usize, len)
    }

    /// Rows in batch `i`.
    pub fn batch_rows(&self, i: usize) -> usize {
        self.starts[i + 1] - self.starts[i]
    }

    /// Hands batch `i`'s pages back to the page cache once it has been used.
    pub fn release(&self, i: usize) {
        let (off, len) = self.block_range(i);
        crate::mmap::release(&self.map, off, len);
    }

    /// Hands every page back to the page cache.
    pub fn release_all(&self) {
        crate::mmap::release(&self.map, 0, self.map.len());
    }

    /// Calls `f` on batches in `order`, each with its index. A second thread decodes the
    /// next batch and faults its pages in while `f` works on the current one, then
    /// waits to hand it over (a rendezvous, not a queue); used batches are released,
    /// so at most two batches are resident: the one in use and the next (an f16
    /// store's batch is handed over converted to f32).
    pub fn for_each_batch(
        &self,
        order: &[usize],
        f: &mut dyn FnMut(usize, ArrayView2<f32>) -> Result<()>,
    ) -> Result<()> {
        std::thread::scope(|scope| {
            let (tx, rx) = crossbeam_channel::bounded::<Result<(usize, StoreBatch)>>(0);
            scope.spawn(move || {
                for &i in order {
                    let item = self.batch(i).map(|b| {
                        let (off, len) = self.block_range(i);
                        crate::mmap::will_need(&self.map, off, len);
                        b.touch();
                        (i, b)
                    });
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                }
            });
            for item in rx {
                let (i, b) = item?;
                let r = f(i, b.values().view());
                self.release(i);
                r?;
            }
            Ok(())
        })
    }

    /// Decodes batch `i` (zero-copy).
    pub fn batch(&self, i: usize) -> Result<StoreBatch> {
        let b = &self.blocks[i];
        let len = b.metaDataLength() as usize + b.bodyLength() as usize;
        let data = self.buffer.slice_with_length(b.offset() as usize, len);
        check_buffers(&data, b.metaDataLength() as usize, b.bodyLength() as usize)
            .map_err(|e| Error::corrupt(&self.path, format!("batch {i}: {e} (damaged)")))?;
        let rb = self
            .decoder
            .read_record_batch(b, &data)
            .map_err(|e| Error::bad(&self.path, format!("batch {i}: {e}")))?
            .ok_or_else(|| Error::bad(&self.path, format!("batch {i} is empty")))?;
        let list = rb.column(0).as_fixed_size_list();
        if list.null_count() > 0 || list.values().null_count() > 0 {
            return Err(Error::bad(&self.path, format!("batch {i} has null values")));
        }
        Ok(StoreBatch {
            rb,
            dim: self.dim,
            precision: self.precision,
        })
    }
}

impl Store {
    /// The batches holding rows `lo..hi`, decoded once, for reading rows of that range
    /// by index and handing their pages back as the work goes ([`Span::release`]).
    pub fn span(&self, lo: usize, hi: usize) -> Result<Span<'_>> {
        let mut parts = Vec::new();
        if lo < hi {
            let mut b = self.starts.partition_point(|&s| s <= lo) - 1;
            while b < self.batches() && self.starts[b] < hi {
                parts.push((self.starts[b], self.batch(b)?));
                b += 1;
            }
        }
        Ok(Span { store: self, parts })
    }

    /// The labels of a feature store (its second u32 column), in row order.
    pub fn labels(&self) -> Result<Vec<u32>> {
        self.feature_column(1, "labels")
    }

    /// The image number of each row of a feature store (its first u32 column): an
    /// image encoded with its mirror has two rows with the same number.
    pub fn images(&self) -> Result<Vec<u32>> {
        self.feature_column(0, "image numbers")
    }

    fn feature_column(&self, k: usize, what: &str) -> Result<Vec<u32>> {
        if self.kind != Kind::Features {
            return Err(Error::bad(
                &self.path,
                format!("has no {what} (not a feature store)"),
            ));
        }
        let mut y = Vec::with_capacity(self.rows());
        for i in 0..self.batches() {
            y.extend_from_slice(self.batch(i)?.column(k));
        }
        Ok(y)
    }
}

/// Decoded batches covering a range of a [`Store`]'s rows.
pub struct Span<'a> {
    store: &'a Store,
    /// (first row, batch) of each batch the range touches, in order.
    parts: Vec<(usize, StoreBatch)>,
}

impl Span<'_> {
    fn part(&self, i: usize) -> (usize, &StoreBatch) {
        let k = self.parts.partition_point(|(s, _)| *s <= i) - 1;
        let (s, b) = &self.parts[k];
        assert!(i - s < b.rows(), "row {i} lies outside the span");
        (*s, b)
    }

    /// Row `i` of the store (which must lie in the span), borrowed from the map.
    pub fn row(&self, i: usize) -> Row<'_> {
        let (s, b) = self.part(i);
        let r = (i - s) * self.store.dim..(i - s + 1) * self.store.dim;
        match b.flat() {
            Row::F32(v) => Row::F32(&v[r]),
            Row::F16(v) => Row::F16(&v[r]),
        }
    }

    fn row_address(&self, i: usize) -> usize {
        match self.row(i) {
            Row::F32(v) => v.as_ptr() as usize,
            Row::F16(v) => v.as_ptr() as usize,
        }
    }

    /// Hands the pages of rows `lo..hi` (within the span) back to the page cache.
    pub fn release(&self, lo: usize, hi: usize) {
        if lo >= hi {
            return;
        }
        let first = self.row_address(lo);
        let last = self.row_address(hi - 1) + self.store.precision.bytes() * self.store.dim;
        // Rows of one batch are contiguous in the map; across a batch boundary the
        // range also covers the next batch's header, which is harmless to release.
        let base = self.store.map.as_ptr() as usize;
        crate::mmap::release(&self.store.map, first - base, last - first);
    }
}

/// Checks that every buffer a batch's metadata names lies inside its body: the Arrow
/// decoder slices them unchecked and panics on a damaged file.
fn check_buffers(
    block: &[u8],
    meta_len: usize,
    body_len: usize,
) -> std::result::Result<(), String> {
    let meta = &block[..meta_len.min(block.len())];
    // An optional continuation marker, then the flatbuffer's length.
    let at = if meta.starts_with(&[0xff; 4]) { 4 } else { 0 };
    let n = meta
        .get(at..at + 4)
        .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or("metadata too short")?;
    let fb = usize::try_from(n)
        .ok()
        .and_then(|n| meta.get(at + 4..at + 4 + n))
        .ok_or("metadata length runs past the block")?;
    let msg = arrow_ipc::root_as_message(fb).map_err(|e| format!("unreadable metadata: {e}"))?;
    let rb = msg
        .header_as_record_batch()
        .ok_or("metadata is not a record batch")?;
    for buf in rb.buffers().into_iter().flatten() {
        let end = i128::from(buf.offset()) + i128::from(buf.length());
        if buf.offset() < 0 || buf.length() < 0 || end > body_len as i128 {
            return Err(format!(
                "a buffer at {} of {} bytes lies outside the {body_len}-byte body",
                buf.offset(),
                buf.length()
            ));
        }
    }
    Ok(())
}

/// One decoded batch of a [`Store`].
pub struct StoreBatch {
    rb: RecordBatch,
    dim: usize,
    precision: Precision,
}

impl StoreBatch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rb.num_rows()
    }

    /// Every value of the batch's rows, in order, borrowed from the memory map.
    fn flat(&self) -> Row<'_> {
        let list = self.rb.column(0).as_fixed_size_list();
        let r = list.offset() * self.dim..(list.offset() + list.len()) * self.dim;
        match self.precision {
            Precision::F32 => Row::F32(&list.values().as_primitive::<Float32Type>().values()[r]),
            Precision::F16 => Row::F16(&list.values().as_primitive::<Float16Type>().values()[r]),
        }
    }

    /// The rows: borrowed from the memory map in an f32 store, converted in an f16 one.
    pub fn values(&self) -> CowArray<'_, f32, Ix2> {
        let shape = (self.rows(), self.dim);
        match self.flat() {
            Row::F32(v) => ArrayView2::from_shape(shape, v)
                .expect("shape matches length")
                .into(),
            half => ndarray::Array2::from_shape_vec(shape, half.to_vec())
                .expect("shape matches length")
                .into(),
        }
    }

    /// Reads one value per page so the batch is resident before it is needed.
    fn touch(&self) -> f32 {
        let mut acc = 0.0;
        match self.flat() {
            Row::F32(v) => v.iter().step_by(1024).for_each(|x| acc += x),
            Row::F16(v) => v.iter().step_by(2048).for_each(|x| acc += f32::from(*x)),
        }
        std::hint::black_box(acc)
    }

    /// A u32 column by position in [`Kind::columns`].
    pub fn column(&self, k: usize) -> &[u32] {
        self.rb.column(k + 1).as_primitive::<UInt32Type>().values()
    }
}

/// Writes the rows of the stores at `parts`, in order, into one store at `out` (with
/// the first part's kind and metadata); returns the rows written.
pub fn concat(parts: &[PathBuf], kind: Kind, out: &Path) -> Result<usize> {
    let first = parts
        .first()
        .ok_or_else(|| Error::bad(out, "nothing to concatenate"))?;
    let head = Store::open(first, kind)?;
    let meta: HashMap<String, String> = head
        .meta
        .iter()
        .filter(|(k, _)| k.starts_with("sae.") && *k != "sae.kind" && *k != "sae.version")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rows_per_batch = head.batch_rows(0).max(1);
    let mut w = StoreWriter::create_as(out, kind, head.dim, head.precision, rows_per_batch, &meta)?;
    for p in parts {
        let s = Store::open(p, kind)?;
        if (s.dim, s.precision) != (head.dim, head.precision) {
            return Err(Error::bad(
                p,
                format!(
                    "rows have {} {} values, the first part {} {}",
                    s.dim,
                    s.precision.name(),
                    head.dim,
                    head.precision.name()
                ),
            ));
        }
        for b in 0..s.batches() {
            let batch = s.batch(b)?;
            let aux: Vec<&[u32]> = (0..kind.columns().len()).map(|k| batch.column(k)).collect();
            w.push_rows(batch.values().view(), &aux)?;
            s.release(b);
        }
    }
    w.finish()
}

/// Row data the trainer can walk chunk by chunk: a store on disk or an array in memory.
pub trait Rows: Sync {
    /// Values per row.
    fn dim(&self) -> usize;
    /// Number of rows.
    fn rows(&self) -> usize;
    /// Calls `f` on consecutive views covering all rows in order.
    fn for_each_chunk(&self, f: &mut dyn FnMut(ArrayView2<f32>) -> Result<()>) -> Result<()>;
}

impl Rows for Store {
    fn dim(&self) -> usize {
        self.dim
    }
    fn rows(&self) -> usize {
        Store::rows(self)
    }
    fn for_each_chunk(&self, f: &mut dyn FnMut(ArrayView2<f32>) -> Result<()>) -> Result<()> {
        let order: Vec<usize> = (0..self.batches()).collect();
        self.for_each_batch(&order, &mut |_, v| f(v))
    }
}

/// Some batches of a store: one rank's shard of the rows.
pub struct Shard<'a> {
    /// The store.
    pub store: &'a Store,
    /// Batch indices, in order.
    pub batches: Vec<usize>,
}

impl<'a> Shard<'a> {
    /// The batches `rank` of `size` reads: a contiguous, balanced share.
    pub fn of(store: &'a Store, rank: usize, size: usize) -> Self {
        Shard {
            store,
            batches: crate::dist::share(store.batches(), rank, size).collect(),
        }
    }
}

impl Rows for Shard<'_> {
    fn dim(&self) -> usize {
        self.store.dim
    }
    fn rows(&self) -> usize {
        self.batches.iter().map(|&b| self.store.batch_rows(b)).sum()
    }
    fn for_each_chunk(&self, f: &mut dyn FnMut(ArrayView2<f32>) -> Result<()>) -> Result<()> {
        self.store.for_each_batch(&self.batches, &mut |_, v| f(v))
    }
}

/// In-memory rows, split into chunks of a fixed number of rows.
pub struct MemoryRows<'a> {
    /// The rows.
    pub data: ArrayView2<'a, f32>,
    /// Rows per chunk.
    pub chunk: usize,
}

impl Rows for MemoryRows<'_> {
    fn dim(&self) -> usize {
        self.data.ncols()
    }
    fn rows(&self) -> usize {
        self.data.nrows()
    }
    fn for_each_chunk(&self, f: &mut dyn FnMut(ArrayView2<f32>) -> Result<()>) -> Result<()> {
        for c in self.data.axis_chunks_iter(Axis(0), self.chunk.max(1)) {
            f(c)?;
        }
        Ok(())
    }
}

/// Writes an `n x d` matrix (with u32 columns) to a store in one call.
pub fn write_all(
    path: &Path,
    kind: Kind,
    rows: ArrayView2<f32>,
    aux: &[&[u32]],
    meta: &HashMap<String, String>,
) -> Result<usize> {
    let mut w = StoreWriter::create(path, kind, rows.ncols(), 65_536, meta)?;
    w.push_rows(rows, aux)?;
    w.finish()
}

/// Reads a whole feature store into memory: rows and labels.
pub fn read_features(path: &Path) -> Result<(ndarray::Array2<f32>, Vec<u32>)> {
    let s = Store::open(path, Kind::Features)?;
    let mut x = ndarray::Array2::<f32>::zeros((s.rows(), s.dim()));
    let mut y = Vec::with_capacity(s.rows());
    for i in 0..s.batches() {
        let b = s.batch(i)?;
        let lo = s.starts[i];
        x.slice_mut(ndarray::s![lo..lo + b.rows(), ..])
            .assign(&b.values());
        y.extend_from_slice(b.column(1));
        // The copy is what the caller keeps; the mapped pages would double it.
        s.release(i);
    }
    Ok((x, y))
}
