//! Reading a recording's LZ4 frame block by block, so that damage is found where it is.
//!
//! The frame (<https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md>) is a descriptor,
//! then blocks, each a little-endian `u32` size (high bit: stored uncompressed), its data, and,
//! when the descriptor says so, the XXH32 checksum of its data; a zero size ends the frame.
//! Recordings use independent blocks of at most 64 KiB with block checksums (older ones have no
//! checksums), so a damaged block is caught before anything in it is used, everything before it
//! reads, and [`Blocks::block_at`] says where it is in the file.

use std::io::{self, Read};

/// The LZ4 frame magic number.
const LZ4_MAGIC: u32 = 0x184D_2204;

pub(super) struct Blocks<R> {
    input: R,
    /// File offset of the next byte of `input`.
    position: u64,
    /// File offset of the block whose data is being served or read (or of the descriptor).
    pub block_at: u64,
    descriptor: Option<Descriptor>,
    compressed: Vec<u8>,
    /// The block's data is `data[..filled]` (sized once for the largest block: filling 64 KiB
    /// with zeros per block would cost more than decoding it).
    data: Vec<u8>,
    filled: usize,
    /// How much of the data has been read.
    served: usize,
    /// The frame ended (or the input did, between blocks).
    ended: bool,
}

#[derive(Clone, Copy)]
struct Descriptor {
    block_checksums: bool,
    content_checksum: bool,
    max_block: usize,
}

fn damaged(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

fn cut_short() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the file ends inside a block")
}

impl<R: Read> Blocks<R> {
    /// The frame read from `input`, which is at offset `position` of the file.
    pub fn new(input: R, position: u64) -> Self {
        Self {
            input,
            position,
            block_at: position,
            descriptor: None,
            compressed: Vec::new(),
            data: Vec::new(),
            filled: 0,
            served: 0,
            ended: false,
        }
    }

    /// Reads into `buf` until it is full or the input ends; how much was read.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    self.position += n as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(filled)
    }

    fn exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if self.fill(buf)? < buf.len() {
            return Err(cut_short());
        }
        Ok(())
    }

    fn read_descriptor(&mut self) -> io::Result<Descriptor> {
        self.block_at = self.position;
        let mut fixed = [0u8; 6];
        self.exact(&mut fixed)?;
        let [m0, m1, m2, m3, flg, bd] = fixed;
        if u32::from_le_bytes([m0, m1, m2, m3]) != LZ4_MAGIC {
            return Err(damaged("no LZ4 frame starts there"));
        }
        let size_id = (bd >> 4) & 0x7;
        if flg >> 6 != 1 || flg & 0x02 != 0 || bd & 0x8f != 0 || size_id < 4 {
            return Err(damaged("the LZ4 frame descriptor is invalid"));
        }
        // (flags, block size, content size): what the descriptor checksum covers.
        let mut covered = [0u8; 10];
        covered[..2].copy_from_slice(&[flg, bd]);
        let mut len = 2;
        if flg & 0x08 != 0 {
            self.exact(&mut covered[2..10])?;
            len = 10;
        }
        if flg & 0x01 != 0 {
            return Err(damaged("an LZ4 dictionary (async-inspect writes none)"));
        }
        let mut checksum = [0u8; 1];
        self.exact(&mut checksum)?;
        if (xxh32(&covered[..len]) >> 8) as u8 != checksum[0] {
            return Err(damaged(
                "the LZ4 frame descriptor's checksum does not match",
            ));
        }
        if flg & 0x20 == 0 {
            return Err(damaged(
                "linked LZ4 blocks (async-inspect writes independent ones)",
            ));
        }
        Ok(Descriptor {
            block_checksums: flg & 0x10 != 0,
            content_checksum: flg & 0x04 != 0,
            // 4: 64 KiB, 5: 256 KiB, 6: 1 MiB, 7: 4 MiB.
            max_block: 1 << (8 + 2 * usize::from(size_id)),
        })
    }

    /// Decodes the next block into `data`; false at the end of the frame, or where the input
    /// ends between blocks.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let descriptor = match self.descriptor {
            Some(descriptor) => descriptor,
            None => {
                let descriptor = self.read_descriptor()?;
                self.descriptor = Some(descriptor);
                descriptor
            }
        };
        self.block_at = self.position;
        let mut word = [0u8; 4];
        match self.fill(&mut word)? {
            0 => {
                self.ended = true;
                return Ok(false);
            }
            4 => {}
            _ => return Err(cut_short()),
        }
        let word = u32::from_le_bytes(word);
        if word == 0 {
            self.ended = true;
            if descriptor.content_checksum {
                // Not checked: every block's own checksum was.
                self.exact(&mut [0u8; 4])?;
            }
            if self.fill(&mut [0u8; 1])? != 0 {
                return Err(damaged(
                    "the compressed data ends there, but the file goes on",
                ));
            }
            return Ok(false);
        }
        let size = (word & 0x7fff_ffff) as usize;
        if size > descriptor.max_block {
            return Err(damaged(format!(
                "a block of {size} bytes, in a frame of blocks of at most {}",
                descriptor.max_block
            )));
        }
        let mut compressed = std::mem::take(&mut self.compressed);
        compressed.resize(size, 0);
        let read = self.exact(&mut compressed);
        self.compressed = compressed;
        read?;
        if descriptor.block_checksums {
            let mut expected = [0u8; 4];
            self.exact(&mut expected)?;
            if xxh32(&self.compressed) != u32::from_le_bytes(expected) {
                return Err(damaged("the block's checksum does not match"));
            }
        }
        self.served = 0;
        self.filled = 0;
        if self.data.len() < descriptor.max_block {
            self.data = vec![0; descriptor.max_block];
        }
        if word & 0x8000_0000 != 0 {
            self.data[..size].copy_from_slice(&self.compressed);
            self.filled = size;
        } else {
            match lz4_flex::block::decompress_into(&self.compressed, &mut self.data) {
                Ok(len) => self.filled = len,
                Err(error) => {
                    return Err(damaged(format!("the block does not decompress ({error})")));
                }
            }
        }
        Ok(true)
    }
}

impl<R: Read> Read for Blocks<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.served == self.filled {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let len = buf.len().min(self.filled - self.served);
        buf[..len].copy_from_slice(&self.data[self.served..self.served + len]);
        self.served += len;
        Ok(len)
    }
}

/// XXH32 with seed 0, what LZ4 frames checksum with.
pub(super) fn xxh32(data: &[u8]) -> u32 {
    const P1: u32 = 0x9E37_79B1;
    const P2: u32 = 0x85EB_CA77;
    const P3: u32 = 0xC2B2_AE3D;
    const P4: u32 = 0x27D4_EB2F;
    const P5: u32 = 0x1656_67B1;
    let round = |acc: u32, lane: &[u8; 4]| {
        let lane = u32::from_le_bytes(*lane);
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    };
    let (stripes, rest) = data.as_chunks::<16>();
    let mut hash = if stripes.is_empty() {
        P5
    } else {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u32.wrapping_sub(P1)];
        for stripe in stripes {
            for (lane, v) in stripe.as_chunks::<4>().0.iter().zip(&mut v) {
                *v = round(*v, lane);
            }
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    };
    hash = hash.wrapping_add(data.len() as u32);
    let (words, bytes) = rest.as_chunks::<4>();
    for word in words {
        hash = hash
            .wrapping_add(u32::from_le_bytes(*word).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
    }
    for &byte in bytes {
        hash = hash
            .wrapping_add(u32::from(byte).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    hash ^= hash >> 15;
    hash = hash.wrapping_mul(P2);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(P3);
    hash ^ (hash >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh32_reference_values() {
        assert_eq!(xxh32(b""), 0x02CC_5D05);
        assert_eq!(xxh32(b"a"), 0x550D_7456);
        assert_eq!(xxh32(b"abc"), 0x32D1_53FF);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition"),
            0xE229_3B2F
        );
    }

    fn frame(info: lz4_flex::frame::FrameInfo, data: &[u8], flush_every: usize) -> Vec<u8> {
        let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        for chunk in data.chunks(flush_every) {
            io::Write::write_all(&mut encoder, chunk).unwrap();
            io::Write::flush(&mut encoder).unwrap();
        }
        encoder.finish().unwrap()
    }

    fn data() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i / 7).to_le_bytes())
            .collect()
    }

    #[test]
    fn reads_what_lz4_flex_writes() {
        use lz4_flex::frame::{BlockSize, FrameInfo};
        let data = data();
        for info in [
            FrameInfo::new(),
            FrameInfo::new()
                .block_size(BlockSize::Max64KB)
                .block_checksums(true),
            FrameInfo::new()
                .block_size(BlockSize::Max256KB)
                .content_checksum(true)
                .content_size(Some(data.len() as u64)),
        ] {
            for flush_every in [1_000, 100_000, data.len()] {
                let bytes = frame(info.clone(), &data, flush_every);
                let mut out = Vec::new();
                Blocks::new(&bytes[..], 0).read_to_end(&mut out).unwrap();
                assert!(out == data, "{info:?}, flushed every {flush_every}");
            }
        }
        // Incompressible data is stored as is.
        let noise: Vec<u8> = (0..100_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let bytes = frame(FrameInfo::new().block_checksums(true), &noise, 30_000);
        let mut out = Vec::new();
        Blocks::new(&bytes[..], 0).read_to_end(&mut out).unwrap();
        assert!(out == noise);
    }

    #[test]
    fn damage_is_found_in_its_block() {
        let info = lz4_flex::frame::FrameInfo::new().block_checksums(true);
        let data = data();
        let bytes = frame(info, &data, 10_000);
        let mut damaged = bytes.clone();
        damaged[bytes.len() / 2] ^= 0x10;
        let mut blocks = Blocks::new(&damaged[..], 100);
        let mut out = Vec::new();
        let error = blocks.read_to_end(&mut out).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(out.len() < data.len() && out[..] == data[..out.len()]);
        assert!(out.len() % 10_000 == 0, "whole blocks before the damage");
        assert!(blocks.block_at - 100 <= bytes.len() as u64 / 2);
        // Bytes after the end of the frame.
        let mut longer = bytes.clone();
        longer.push(0);
        let error = Blocks::new(&longer[..], 0)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(error.to_string().contains("the file goes on"));
        // Cut short between blocks, and inside one.
        let mut out = Vec::new();
        Blocks::new(&bytes[..bytes.len() - 4], 0)
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == data);
        let error = Blocks::new(&bytes[..bytes.len() - 10], 0)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
