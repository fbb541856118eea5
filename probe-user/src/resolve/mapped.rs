//! The target's executable (or its debug file), mapped rather than read: DWARF is kept for the
//! whole run (await points are decoded lazily, task type by task type), and a copy of its
//! sections would cost the collector as much memory as the binary's debuginfo, tens of MB for a
//! real server. Mapped, a page costs memory only while it is resident, and the kernel can take
//! it back.

use std::{fs::File, ops::Deref, path::Path, sync::Arc};

use memmap2::{Mmap, UncheckedAdvice};
use object::{CompressionFormat, ObjectSection};

/// A mapped file, shared by everything that reads sections from it.
#[derive(Clone, Debug)]
pub struct MappedFile(Arc<Mmap>);

impl MappedFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        // SAFETY: the mapping is private and read-only. A binary being rebuilt is written to a new
        // file and renamed over the old one (cargo, ld), which leaves this mapping's file intact.
        let map = unsafe { Mmap::map(&file)? };
        Ok(Self(Arc::new(map)))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes of `section` as a reader can keep them: a window on the mapping, or, for a
    /// compressed section, its decompressed copy.
    pub fn section<'data>(&self, section: &impl ObjectSection<'data>) -> Option<SectionBytes> {
        let range = section.compressed_file_range().ok()?;
        if range.format != CompressionFormat::None {
            return SectionBytes::copied(section);
        }
        let start = usize::try_from(range.offset).ok()?;
        let end = start.checked_add(usize::try_from(range.uncompressed_size).ok()?)?;
        (end <= self.0.len()).then(|| SectionBytes::Mapped {
            map: self.0.clone(),
            start,
            end,
        })
    }

    /// Gives back the pages read so far (resolve walks every unit of DWARF once): what is read
    /// again later is faulted in again from the file, which stays in the page cache.
    pub fn release_pages(&self) {
        // SAFETY: DONTNEED on a private read-only file mapping only drops clean pages; their
        // contents are read back from the file at the next access, unchanged.
        let _ = unsafe { self.0.unchecked_advise(UncheckedAdvice::DontNeed) };
    }
}

/// A section's bytes, cheap to clone, for gimli's `EndianReader`.
#[derive(Clone, Debug)]
pub enum SectionBytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        end: usize,
    },
    Owned(Arc<[u8]>),
}

impl SectionBytes {
    pub fn empty() -> Self {
        Self::Owned(Arc::from(&[][..]))
    }

    /// A copy of `section`'s bytes, decompressed.
    pub fn copied<'data>(section: &impl ObjectSection<'data>) -> Option<Self> {
        Some(Self::Owned(Arc::from(&*section.uncompressed_data().ok()?)))
    }
}

impl Deref for SectionBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped { map, start, end } => &map[*start..*end],
            Self::Owned(bytes) => bytes,
        }
    }
}

// SAFETY: both variants deref into memory owned through an `Arc`, which neither moving nor
// cloning the handle relocates.
unsafe impl gimli::StableDeref for SectionBytes {}
unsafe impl gimli::CloneStableDeref for SectionBytes {}
