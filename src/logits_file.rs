//! llama-perplexity's saved-logits file (`--kl-divergence-base`), so a base
//! saved by either tool serves the other: `_logits_`, u32 n_ctx, i32 n_vocab,
//! i32 n_chunk, the n_chunk * n_ctx i32 tokens of the chunks, then for every
//! scored position (n_ctx - 1 - n_ctx/2 per chunk) one row of
//! `2 * ((n_vocab + 1) / 2) + 4` u16: f32 scale and f32 min log-prob, then each
//! token's log-prob as a 16-bit step above the minimum (logits more than 16
//! below the maximum are clamped to it).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"_logits_";

/// u16 values per row.
pub fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// ggml's `nearest_int`: round half to even through the float mantissa.
fn nearest_int(f: f32) -> i32 {
    ((f + 12582912.0f32).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Encodes one row of logits as llama-perplexity's `log_softmax` does.
pub fn encode(logits: &[f32], out: &mut Vec<u16>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = logits
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min)
        .max(max - 16.0);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum = sum.ln() as f32;
    let min_log_prob = min - max - log_sum;
    let scale = (max - min) / 65535.0;
    let header: [f32; 2] = [scale, min_log_prob];
    for h in header {
        let b = h.to_le_bytes();
        out.push(u16::from_le_bytes([b[0], b[1]]));
        out.push(u16::from_le_bytes([b[2], b[3]]));
    }
    let start = out.len();
    if scale != 0.0 {
        let inv = 1.0 / scale;
        out.extend(logits.iter().map(|&l| {
            if l > min {
                nearest_int(inv * (l - min)) as u16
            } else {
                0
            }
        }));
    } else {
        out.extend(std::iter::repeat_n(0, logits.len()));
    }
    out.resize(start - 4 + row_len(logits.len()), 0);
}

/// Decodes one row to log-probs; also the index of the largest (first on ties).
pub fn decode(row: &[u16], n_vocab: usize) -> (Vec<f32>, usize) {
    let f = |i: usize| {
        f32::from_le_bytes([
            row[i] as u8,
            (row[i] >> 8) as u8,
            row[i + 1] as u8,
            (row[i + 1] >> 8) as u8,
        ])
    };
    let (scale, min) = (f(0), f(2));
    let q = &row[4..4 + n_vocab];
    let mut arg = 0;
    for (i, &v) in q.iter().enumerate() {
        if v > q[arg] {
            arg = i;
        }
    }
    (q.iter().map(|&v| scale * v as f32 + min).collect(), arg)
}

pub struct Writer {
    w: BufWriter<std::fs::File>,
    n_vocab: usize,
    buf: Vec<u16>,
}

impl Writer {
    pub fn create(
        path: &Path,
        n_ctx: usize,
        n_vocab: usize,
        tokens: &[i32],
    ) -> Result<Writer, String> {
        let e = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut w = BufWriter::new(std::fs::File::create(path).map_err(e)?);
        let n_chunk = tokens.len() / n_ctx;
        w.write_all(MAGIC).map_err(e)?;
        w.write_all(&(n_ctx as u32).to_le_bytes()).map_err(e)?;
        w.write_all(&(n_vocab as i32).to_le_bytes()).map_err(e)?;
        w.write_all(&(n_chunk as i32).to_le_bytes()).map_err(e)?;
        for t in &tokens[..n_chunk * n_ctx] {
            w.write_all(&t.to_le_bytes()).map_err(e)?;
        }
        Ok(Writer {
            w,
            n_vocab,
            buf: Vec::new(),
        })
    }

    /// Appends the rows of one chunk's scored positions.
    pub fn rows(&mut self, logits: &[f32]) -> Result<(), String> {
        for row in logits.chunks(self.n_vocab) {
            self.buf.clear();
            encode(row, &mut self.buf);
            let bytes: Vec<u8> = self.buf.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.w.write_all(&bytes).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<(), String> {
        self.w.flush().map_err(|e| e.to_string())
    }
}

pub struct Reader {
    r: BufReader<std::fs::File>,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub tokens: Vec<i32>,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, String> {
        let e = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut r = BufReader::new(std::fs::File::open(path).map_err(e)?);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(e)?;
        if &magic != MAGIC {
            return Err(format!(
                "{}: not a saved-logits file (no _logits_ header)",
                path.display()
            ));
        }
        let mut b4 = [0u8; 4];
        let mut next = |r: &mut BufReader<std::fs::File>| -> Result<u32, String> {
            r.read_exact(&mut b4).map_err(e)?;
            Ok(u32::from_le_bytes(b4))
        };
        let n_ctx = next(&mut r)? as usize;
        let n_vocab = next(&mut r)? as i32;
        let n_chunk = next(&mut r)? as i32;
        if n_ctx < 2
            || n_vocab <= 0
            || n_chunk <= 0
            || n_ctx
                .checked_mul(n_chunk as usize)
                .is_none_or(|n| n > 1 << 30)
        {
            return Err(format!(
                "{}: bad header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk})",
                path.display()
            ));
        }
        // The whole file's size, from the header, before anything is allocated:
        // a header promising more than the file holds is refused.
        let rows = n_ctx - 1 - n_ctx / 2;
        let want = (n_ctx * n_chunk as usize).checked_mul(4).and_then(|t| {
            (n_chunk as usize)
                .checked_mul(rows)?
                .checked_mul(row_len(n_vocab as usize))?
                .checked_mul(2)?
                .checked_add(t + 20)
        });
        let len = r.get_ref().metadata().map_err(e)?.len();
        if want.is_none_or(|w| w as u64 > len) {
            return Err(format!(
                "{}: truncated: its header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}) needs {} bytes, the file has {len}",
                path.display(),
                want.map_or("more than 2^64".into(), |w| w.to_string())
            ));
        }
        let mut tokens = vec![0i32; n_ctx * n_chunk as usize];
        let mut bytes = vec![0u8; tokens.len() * 4];
        r.read_exact(&mut bytes)
            .map_err(|_| format!("{}: truncated token list", path.display()))?;
        for (t, c) in tokens.iter_mut().zip(bytes.chunks(4)) {
            *t = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(Reader {
            r,
            n_ctx,
            n_vocab: n_vocab as usize,
            n_chunk: n_chunk as usize,
            tokens,
        })
    }

    /// The next chunk's scored rows, decoded.
    pub fn chunk(&mut self) -> Result<Vec<(Vec<f32>, usize)>, String> {
        let rows = self.n_ctx - 1 - self.n_ctx / 2;
        let nv = row_len(self.n_vocab);
        let mut bytes = vec![0u8; nv * 2];
        (0..rows)
            .map(|_| {
                self.r
                    .read_exact(&mut bytes)
                    .map_err(|_| "saved-logits file truncated".to_string())?;
                let row: Vec<u16> = bytes
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                Ok(decode(&row, self.n_vocab))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_within_a_step() {
        let logits: Vec<f32> = (0..1001)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 10.0)
            .collect();
        let mut row = Vec::new();
        encode(&logits, &mut row);
        assert_eq!(row.len(), row_len(logits.len()));
        let (lp, arg) = decode(&row, logits.len());
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let lse = logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32
            + max;
        let step = (max - (max - 16.0).max(-10.0)) / 65535.0;
        for (i, (&l, &p)) in logits.iter().zip(&lp).enumerate() {
            if l > max - 16.0 {
                assert!((p - (l - lse)).abs() <= step, "{i}: {p} vs {}", l - lse);
            }
        }
        assert_eq!(logits[arg], max);
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(65534.7), 65535);
    }
}
