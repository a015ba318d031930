//! A service's cluster parts, in chunks shared between successive views.
//!
//! A view holds one `Arc<ClusterView>` per cluster exporting the service.
//! Copying those into the next view would touch every part's reference
//! count (a cache miss each: at 1,000 clusters, most of a rebuild). In
//! chunks of [`CHUNK`], an update shares every chunk whose parts did not
//! change or move, and copies only the rest.

use std::ops::Index;
use std::sync::Arc;

use super::view::ClusterView;

/// Parts per shared chunk.
pub const CHUNK: usize = 64;

#[derive(Debug, Default, Clone)]
pub struct Parts {
    chunks: Vec<Arc<[Arc<ClusterView>]>>,
    len: usize,
}

impl Parts {
    /// No parts, borrowed for as long as needed.
    pub fn empty() -> &'static Parts {
        static EMPTY: Parts = Parts {
            chunks: Vec::new(),
            len: 0,
        };
        &EMPTY
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ClusterView>> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Chunk `k`, if there is one.
    pub fn chunk(&self, k: usize) -> Option<&Arc<[Arc<ClusterView>]>> {
        self.chunks.get(k)
    }

    /// The index of the part `f` orders as equal, or where it would go,
    /// as `slice::binary_search_by`.
    pub fn binary_search_by(
        &self,
        mut f: impl FnMut(&Arc<ClusterView>) -> std::cmp::Ordering,
    ) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = low + (high - low) / 2;
            match f(&self[mid]) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }
}

impl Index<usize> for Parts {
    type Output = Arc<ClusterView>;

    fn index(&self, i: usize) -> &Arc<ClusterView> {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// Builds [`Parts`] in order, one part or one shared chunk at a time.
#[derive(Debug, Default)]
pub struct PartsBuilder {
    chunks: Vec<Arc<[Arc<ClusterView>]>>,
    current: Vec<Arc<ClusterView>>,
    len: usize,
}

impl PartsBuilder {
    pub fn push(&mut self, part: Arc<ClusterView>) {
        self.current.push(part);
        self.len += 1;
        if self.current.len() == CHUNK {
            self.chunks
                .push(Arc::from(std::mem::take(&mut self.current)));
        }
    }

    /// The chunk being filled, or when it is empty (at a chunk boundary)
    /// the last chunk filled: the parts pushed since the boundary before.
    pub fn last_chunk(&self) -> &[Arc<ClusterView>] {
        match self.chunks.last() {
            Some(chunk) if self.current.is_empty() => chunk,
            _ => &self.current,
        }
    }

    /// Appends a whole chunk as it is; only at a chunk boundary.
    pub fn share(&mut self, chunk: &Arc<[Arc<ClusterView>]>) {
        debug_assert!(self.current.is_empty() && self.len.is_multiple_of(CHUNK));
        self.len += chunk.len();
        if chunk.len() == CHUNK {
            self.chunks.push(chunk.clone());
        } else {
            // A short last chunk: later pushes must follow it.
            self.current.extend(chunk.iter().cloned());
        }
    }

    pub fn finish(mut self) -> Parts {
        if !self.current.is_empty() {
            self.chunks.push(Arc::from(self.current));
        }
        Parts {
            chunks: self.chunks,
            len: self.len,
        }
    }
}
