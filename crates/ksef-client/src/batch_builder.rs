//! A batch archive built as a stream, with bounded memory: invoices go one at a time into a
//! ZIP writer that never seeks, whose output is cut into parts of at most `part_size` bytes;
//! each part is encrypted in place as its bytes arrive (AES-256-CBC, whole blocks, with the
//! part's running SHA-256; the tail padded when the part is full) and handed out when sealed
//! ([`ArchiveBuilder::take_ready`]). At most one part (plus its 16 bytes of padding) is held
//! while it is filled, and no call encrypts much more than the bytes it added: the local driver
//! builds several sellers' batches in one task, and a whole part encrypted at once (seconds of
//! CPU in a debug build) held the other sellers' KSeF calls past their timeout.
//!
//! KSeF wants the whole archive's size and hash and every encrypted part's size and hash when
//! the session is opened, before any part is uploaded. So an archive is built twice from the
//! same invoices with the same key: once to declare it ([`BatchPlan`]: only the sizes and hashes
//! are kept), once to upload it part by part. The output is deterministic (fixed entry times, the
//! same key and IV for every part, as the official clients do), and the second pass checks each
//! part against its declaration before it leaves.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use relay_domain::{ContentHash, ErrorClass, ErrorSource, Failure};
use sha2::{Digest, Sha256};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::ZipWriter;

use crate::batch::{Compression, EncryptedPart, MAX_PARTS, MAX_PART_SIZE};
use crate::client::Result;
use crate::secret::SessionKey;

/// KSeF's limit on one package: 5 GB before encryption.
pub const MAX_ARCHIVE_SIZE: u64 = 5_000_000_000;
/// KSeF's default limit on invoices in one session.
pub const MAX_INVOICES: usize = 10_000;

fn builder_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(
        ErrorClass::Permanent,
        ErrorSource::Ksef {
            operation: "batch_archive".into(),
        },
        format!("cannot build the batch archive: {e}"),
    )
}

/// One encrypted part as declared when the session is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartDeclaration {
    pub ordinal: u32,
    pub size: u64,
    pub hash: ContentHash,
}

impl PartDeclaration {
    fn of(part: &EncryptedPart) -> PartDeclaration {
        PartDeclaration {
            ordinal: part.ordinal,
            size: part.bytes.len() as u64,
            hash: part.hash,
        }
    }
}

/// Everything KSeF is told when a batch session opens, and the key the parts are encrypted with.
pub struct BatchPlan {
    pub key: Arc<SessionKey>,
    pub part_size: usize,
    pub compression: Compression,
    /// The whole unencrypted archive.
    pub file_size: u64,
    pub file_hash: ContentHash,
    pub parts: Vec<PartDeclaration>,
    /// The largest number of archive bytes the builder held at once while declaring it.
    pub peak_buffered: usize,
}

#[derive(Default)]
struct SinkState {
    part_size: usize,
    /// The part being filled, encrypted in place as its bytes arrive: its first `encrypted_to`
    /// bytes are ciphertext (whole AES blocks), the rest (under 16 bytes) waits for its block.
    buf: Vec<u8>,
    encrypted_to: usize,
    /// The part's CBC state after its encrypted blocks (a new part starts again from the IV).
    cipher: Option<cbc::Encryptor<aes::Aes256>>,
    /// The running SHA-256 of the part's ciphertext.
    part_hash: Sha256,
    total: u64,
    whole: Sha256,
    ready: Vec<EncryptedPart>,
    next_ordinal: u32,
    peak: usize,
    /// Bytes encrypted so far, padding included: the tests read how much of it one call did.
    encrypted: u64,
}

impl SinkState {
    fn held(&self) -> usize {
        self.buf.capacity() + self.ready.iter().map(|p| p.bytes.capacity()).sum::<usize>()
    }

    /// Encrypts the part's complete blocks not encrypted yet; called as the bytes arrive, so
    /// that no call does more than its own bytes and a block (see the opening paragraph).
    fn encrypt_blocks(&mut self, key: &SessionKey) {
        let end = self.buf.len() - self.buf.len() % 16;
        if end == self.encrypted_to {
            return;
        }
        let cipher = self
            .cipher
            .get_or_insert_with(|| cbc::Encryptor::<aes::Aes256>::new(key.key().into(), (&key.iv).into()));
        let fresh = &mut self.buf[self.encrypted_to..end];
        for block in fresh.chunks_exact_mut(16) {
            cipher.encrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        self.part_hash.update(&*fresh);
        self.encrypted += fresh.len() as u64;
        self.encrypted_to = end;
    }

    /// Ends the part: PKCS#7 padding (1 to 16 bytes) on its tail, the last block encrypted.
    /// The bytes are the same as `crypto::aes_encrypt` of the whole part.
    fn seal(&mut self, key: &SessionKey) {
        if self.buf.is_empty() {
            return;
        }
        let pad = 16 - self.buf.len() % 16;
        self.buf.resize(self.buf.len() + pad, pad as u8);
        self.encrypt_blocks(key);
        let bytes = std::mem::take(&mut self.buf);
        self.encrypted_to = 0;
        self.cipher = None;
        let hash = ContentHash::from_digest(std::mem::take(&mut self.part_hash).finalize().into());
        self.next_ordinal += 1;
        self.ready.push(EncryptedPart {
            ordinal: self.next_ordinal,
            hash,
            bytes,
        });
        self.peak = self.peak.max(self.held());
    }
}

/// The ZIP writer's output: cut into parts, each sealed when full.
struct PartSink {
    key: Arc<SessionKey>,
    state: Arc<Mutex<SinkState>>,
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut s = self.state.lock().expect("sink state");
        let room = s.part_size - s.buf.len();
        let n = data.len().min(room);
        // Grow by doubling, but never past one part (and its padding): a doubling Vec would
        // otherwise hold up to twice a part.
        let need = s.buf.len() + n;
        if need > s.buf.capacity() {
            let target = (s.buf.capacity() * 2).max(need).max(1 << 20).min(s.part_size + 16);
            let len = s.buf.len();
            s.buf.reserve_exact(target - len);
        }
        s.buf.extend_from_slice(&data[..n]);
        s.encrypt_blocks(&self.key);
        s.whole.update(&data[..n]);
        s.total += n as u64;
        s.peak = s.peak.max(s.held());
        if s.buf.len() == s.part_size {
            s.seal(&self.key);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds a ZIP archive of invoices as a stream of encrypted parts.
pub struct ArchiveBuilder {
    zip: ZipWriter<StreamWriter<PartSink>>,
    key: Arc<SessionKey>,
    state: Arc<Mutex<SinkState>>,
    invoices: usize,
}

impl ArchiveBuilder {
    /// A ZIP (deflate) cut into parts of at most `part_size` bytes (≤ 100 MB), encrypted with `key`.
    pub fn zip(key: Arc<SessionKey>, part_size: usize) -> ArchiveBuilder {
        let state = Arc::new(Mutex::new(SinkState {
            part_size: part_size.clamp(1, MAX_PART_SIZE),
            ..Default::default()
        }));
        let sink = PartSink {
            key: key.clone(),
            state: state.clone(),
        };
        ArchiveBuilder {
            zip: ZipWriter::new_stream(sink),
            key,
            state,
            invoices: 0,
        }
    }

    /// Adds one invoice's exact bytes as `name`; returns the part its entry starts in.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<u32> {
        if self.invoices >= MAX_INVOICES {
            return Err(builder_failure(format!("more than {MAX_INVOICES} invoices")));
        }
        let (start, part_size) = {
            let s = self.state.lock().expect("sink state");
            (s.total, s.part_size as u64)
        };
        // Fixed entry times: the second pass must produce the same bytes as the first.
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default());
        self.zip.start_file(name, opts).map_err(builder_failure)?;
        self.zip.write_all(bytes).map_err(builder_failure)?;
        self.invoices += 1;
        let total = self.state.lock().expect("sink state").total;
        if total > MAX_ARCHIVE_SIZE || total.div_ceil(part_size) > MAX_PARTS as u64 {
            return Err(builder_failure(format!(
                "the archive outgrows KSeF's limits ({MAX_PARTS} parts of {part_size} bytes, {MAX_ARCHIVE_SIZE} bytes)"
            )));
        }
        Ok((start / part_size) as u32 + 1)
    }

    /// The parts completed so far, encrypted, in order; the builder keeps none of them.
    pub fn take_ready(&mut self) -> Vec<EncryptedPart> {
        std::mem::take(&mut self.state.lock().expect("sink state").ready)
    }

    /// Ends the archive: the parts not taken yet (the last one included) and the whole
    /// archive's size and hash, with the peak of bytes held.
    pub fn finish(self) -> Result<(Vec<EncryptedPart>, u64, ContentHash, usize)> {
        let ArchiveBuilder { zip, key, state, .. } = self;
        zip.finish().map_err(builder_failure)?;
        let mut s = state.lock().expect("sink state");
        s.seal(&key);
        let whole = std::mem::take(&mut s.whole);
        let hash = ContentHash::from_digest(whole.finalize().into());
        if s.next_ordinal as usize > MAX_PARTS || s.total > MAX_ARCHIVE_SIZE {
            return Err(builder_failure(format!(
                "{} parts, {} bytes; KSeF allows {MAX_PARTS} parts and {MAX_ARCHIVE_SIZE} bytes",
                s.next_ordinal, s.total
            )));
        }
        Ok((std::mem::take(&mut s.ready), s.total, hash, s.peak))
    }
}

/// The declaring pass, one invoice at a time (for callers that read each invoice's bytes
/// asynchronously): only sizes and hashes are kept.
pub struct BatchPlanner {
    builder: ArchiveBuilder,
    key: Arc<SessionKey>,
    part_size: usize,
    parts: Vec<PartDeclaration>,
}

impl BatchPlanner {
    pub fn new(key: Arc<SessionKey>, part_size: usize) -> BatchPlanner {
        BatchPlanner {
            builder: ArchiveBuilder::zip(key.clone(), part_size),
            key,
            part_size,
            parts: Vec::new(),
        }
    }

    /// Adds one invoice; returns the part its archive entry starts in.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<u32> {
        let part = self.builder.add(name, bytes)?;
        self.parts.extend(self.builder.take_ready().iter().map(PartDeclaration::of));
        Ok(part)
    }

    pub fn finish(self) -> Result<BatchPlan> {
        let BatchPlanner {
            builder,
            key,
            part_size,
            mut parts,
        } = self;
        let (rest, file_size, file_hash, peak_buffered) = builder.finish()?;
        parts.extend(rest.iter().map(PartDeclaration::of));
        Ok(BatchPlan {
            key,
            part_size,
            compression: Compression::Zip,
            file_size,
            file_hash,
            parts,
            peak_buffered,
        })
    }
}

impl BatchPlan {
    /// Declares an archive of `invoices` (file name and bytes, read one at a time): builds it
    /// once, keeping only its sizes and hashes and the part each invoice starts in.
    pub fn declare<'a>(
        key: Arc<SessionKey>,
        part_size: usize,
        invoices: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(BatchPlan, Vec<u32>)> {
        let mut p = BatchPlanner::new(key, part_size);
        let mut members = Vec::new();
        for (name, bytes) in invoices {
            members.push(p.add(name, bytes)?);
        }
        Ok((p.finish()?, members))
    }

    /// A second builder for the upload pass (same key, same part size).
    pub fn builder(&self) -> ArchiveBuilder {
        ArchiveBuilder::zip(self.key.clone(), self.part_size)
    }

    /// Checks a part of the upload pass against its declaration.
    pub fn check(&self, part: &EncryptedPart) -> Result<()> {
        match self.parts.iter().find(|d| d.ordinal == part.ordinal) {
            Some(d) if *d == PartDeclaration::of(part) => Ok(()),
            _ => Err(builder_failure(format!(
                "part {} came out different from its declaration; the archive is not reproducible",
                part.ordinal
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::block_padding::Pkcs7;
    use std::io::Read;

    fn invoices(n: usize) -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                // Varied, poorly compressible content so the archive spans several small parts.
                let body: String = (0..200).map(|k| format!("{:x}", (i * 7919 + k * 104729) % 65521)).collect();
                (format!("{i}.xml"), format!("<Faktura n=\"{i}\">{body}</Faktura>").into_bytes())
            })
            .collect()
    }

    #[test]
    fn parts_decrypt_and_join_into_the_declared_zip_and_a_second_pass_matches() {
        let key = Arc::new(SessionKey::generate());
        let inv = invoices(300);
        let part_size = 20_000;
        let (plan, starts) = BatchPlan::declare(key.clone(), part_size, inv.iter().map(|(n, b)| (n.as_str(), b.as_slice()))).unwrap();
        assert!(plan.parts.len() > 3, "several parts: {}", plan.parts.len());
        assert_eq!(starts.len(), 300);
        assert_eq!(starts[0], 1);
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "entries start in non-decreasing parts");
        let last = *starts.last().unwrap() as usize;
        assert!(
            last > 1 && last <= plan.parts.len(),
            "the last entry starts in a later part: {last}"
        );
        assert!(
            plan.peak_buffered <= 2 * (part_size + 16),
            "at most a part being filled and one sealed: {}",
            plan.peak_buffered
        );

        // The upload pass: same parts, and they decrypt to the declared archive.
        let mut b = plan.builder();
        let mut out = Vec::new();
        for (n, bytes) in &inv {
            b.add(n, bytes).unwrap();
            out.extend(b.take_ready());
        }
        out.extend(b.finish().unwrap().0);
        assert_eq!(out.len(), plan.parts.len());
        let mut zip_bytes = Vec::new();
        for p in &out {
            plan.check(p).unwrap();
            use aes::cipher::BlockDecryptMut;
            let plain = cbc::Decryptor::<aes::Aes256>::new(key.key().into(), (&key.iv).into())
                .decrypt_padded_vec_mut::<Pkcs7>(&p.bytes)
                .unwrap();
            assert!(plain.len() <= part_size);
            zip_bytes.extend(plain);
        }
        assert_eq!(zip_bytes.len() as u64, plan.file_size);
        assert_eq!(ContentHash::of(&zip_bytes), plan.file_hash);
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
        assert_eq!(z.len(), 300);
        let mut s = String::new();
        z.by_name("299.xml").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s.as_bytes(), inv[299].1.as_slice());
    }

    /// Pseudo-random, incompressible bytes: a few invoices fill parts of several MB.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn counters(b: &ArchiveBuilder) -> (u64, u64) {
        let s = b.state.lock().unwrap();
        (s.total, s.encrypted)
    }

    /// The local driver runs several sellers' batches in one task, yielding between members:
    /// no call may encrypt much more than the bytes it wrote itself (a part sealed at once was
    /// seconds of CPU in a debug build, and other sellers' KSeF calls timed out meanwhile).
    #[test]
    fn no_call_encrypts_more_than_its_own_bytes_and_two_blocks() {
        let key = Arc::new(SessionKey::generate());
        let part_size = 3_000_007;
        let mut b = ArchiveBuilder::zip(key, part_size);
        let mut parts = Vec::new();
        for i in 0..80u64 {
            let (w0, e0) = counters(&b);
            b.add(&format!("{i}.xml"), &noise(i, 90_000 + i as usize * 7)).unwrap();
            parts.extend(b.take_ready());
            let (w1, e1) = counters(&b);
            // At most the tail carried from before (< 16 bytes) and one part's padding block.
            assert!(
                e1 - e0 < (w1 - w0) + 32,
                "add {i} wrote {} bytes and encrypted {}",
                w1 - w0,
                e1 - e0
            );
        }
        assert!(parts.len() >= 2, "the adds sealed parts: {}", parts.len());
        let (w0, e0) = counters(&b);
        let state = b.state.clone();
        let (rest, total, ..) = b.finish().unwrap();
        let e1 = state.lock().unwrap().encrypted;
        assert!(
            e1 - e0 < (total - w0) + 32,
            "finish wrote {} bytes and encrypted {}",
            total - w0,
            e1 - e0
        );
        parts.extend(rest);
        assert_eq!(parts.len() as u64, total.div_ceil(part_size as u64));
        assert_eq!(e1, parts.iter().map(|p| p.bytes.len() as u64).sum::<u64>());
    }

    /// The parts encrypted block by block as the bytes arrive are byte for byte the whole part
    /// encrypted at once (`crypto::aes_encrypt`, as the online path does), with its SHA-256:
    /// part sizes and stream lengths on and off the 16-byte blocks and the part boundaries,
    /// written in pieces of several sizes.
    #[test]
    fn parts_encrypted_as_the_bytes_arrive_equal_each_part_encrypted_at_once() {
        let key = Arc::new(SessionKey::generate());
        for part_size in [16usize, 32, 1000, 4096, 4099] {
            let lengths = [
                1,
                15,
                16,
                17,
                part_size - 1,
                part_size,
                part_size + 1,
                2 * part_size,
                3 * part_size + 5,
            ];
            for len in lengths {
                let plain = noise((part_size * 31 + len) as u64, len);
                for piece in [1usize, 7, 16, 33, 5000] {
                    let state = Arc::new(Mutex::new(SinkState {
                        part_size,
                        ..Default::default()
                    }));
                    let mut sink = PartSink {
                        key: key.clone(),
                        state: state.clone(),
                    };
                    for chunk in plain.chunks(piece) {
                        sink.write_all(chunk).unwrap();
                    }
                    let mut s = state.lock().unwrap();
                    s.seal(&key);
                    let parts = std::mem::take(&mut s.ready);
                    let expected: Vec<Vec<u8>> = plain.chunks(part_size).map(|p| crate::crypto::aes_encrypt(&key, p)).collect();
                    let case = format!("part size {part_size}, {len} bytes in pieces of {piece}");
                    assert_eq!(parts.len(), expected.len(), "{case}");
                    for (k, (part, want)) in parts.iter().zip(&expected).enumerate() {
                        assert_eq!(part.ordinal as usize, k + 1, "{case}");
                        assert!(part.bytes == *want, "{case}: part {} differs", k + 1);
                        assert_eq!(part.hash, ContentHash::of(want), "{case}: part {}'s hash", k + 1);
                    }
                    assert_eq!(s.encrypted, expected.iter().map(|p| p.len() as u64).sum::<u64>(), "{case}");
                    assert!(s.buf.capacity() <= part_size + 16, "{case}: at most one part held");
                }
            }
        }
    }

    #[test]
    fn a_part_that_differs_from_its_declaration_is_refused() {
        let key = Arc::new(SessionKey::generate());
        let inv = invoices(5);
        let (plan, _) = BatchPlan::declare(key, 1_000_000, inv.iter().map(|(n, b)| (n.as_str(), b.as_slice()))).unwrap();
        let mut b = plan.builder();
        b.add("other.xml", b"<x/>").unwrap();
        let parts = b.finish().unwrap().0;
        assert!(plan.check(&parts[0]).is_err());
    }
}
