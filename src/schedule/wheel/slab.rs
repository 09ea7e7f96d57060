//! The wheel's storage: one slab (`Vec`) of timer nodes, the intrusive doubly linked
//! lists they are threaded into through `u32` indices, the free list of vacated nodes,
//! and the per-node generations that let a stale [`TimerKey`] be detected.
//!
//! The slab knows nothing of time or placement: it links, unlinks and frees nodes in
//! whatever [`List`] it is handed. Which list a node belongs in is the wheel's business.

use std::mem;
use std::num::NonZeroU32;

/// Node indices are stored as `index + 1` in a `NonZeroU32` and `u32::MAX` means "none",
/// so this many nodes fit.
const MAX_NODES: usize = (u32::MAX - 1) as usize;

/// Opaque handle to a timer in the wheel (slab index + generation so a stale key is
/// detected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// A node index, or none.
///
/// Stored as `index + 1` in a `NonZeroU32` so the all-zero bit pattern is free: the
/// compiler uses it as the tag of [`Node`], which keeps a node at 24 bytes for
/// `T = u64` instead of 32.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Link(NonZeroU32);

impl Link {
    pub(super) const NIL: Link = Link(NonZeroU32::MAX);

    /// `index` must be below `MAX_NODES`, which `Slab::insert` guarantees.
    #[inline]
    fn to(index: usize) -> Link {
        Link(NonZeroU32::MIN.saturating_add(index as u32))
    }

    #[inline]
    pub(super) fn index(self) -> Option<usize> {
        if self == Link::NIL {
            None
        } else {
            Some(self.0.get() as usize - 1)
        }
    }
}

/// A list of nodes, in the order they were appended.
#[derive(Clone, Copy)]
pub(super) struct List {
    head: Link,
    tail: Link,
}

impl List {
    pub(super) const EMPTY: List = List {
        head: Link::NIL,
        tail: Link::NIL,
    };

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.head == Link::NIL
    }

    /// The first node; the rest follow through [`Slab::read`].
    #[inline]
    pub(super) fn head(&self) -> Link {
        self.head
    }

    /// Empties the list, returning its first node; the rest follow through
    /// [`Slab::next`], which stays valid until the nodes are linked elsewhere or freed.
    #[inline]
    pub(super) fn take(&mut self) -> Link {
        mem::replace(self, List::EMPTY).head
    }
}

pub(super) enum Node<T> {
    Pending {
        deadline: u64,
        prev: Link,
        next: Link,
        value: T,
    },
    Free {
        next_free: Link,
    },
}

impl<T> Node<T> {
    #[inline]
    fn set_prev(&mut self, link: Link) {
        if let Node::Pending { prev, .. } = self {
            *prev = link;
        }
    }

    #[inline]
    fn set_next(&mut self, link: Link) {
        if let Node::Pending { next, .. } = self {
            *next = link;
        }
    }
}

/// The nodes of every pending timer, and the free nodes between them.
pub(super) struct Slab<T> {
    nodes: Vec<Node<T>>,
    /// Per-node generation, kept apart from `nodes` because a node has no spare bytes.
    /// Bumped when a node is reused, so keys of earlier occupants no longer match (it
    /// wraps after 2^32 reuses of one node, far beyond any key's useful life).
    generations: Vec<u32>,
    free_head: Link,
    len: usize,
}

impl<T> Slab<T> {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Slab {
            nodes: Vec::with_capacity(capacity),
            generations: Vec::with_capacity(capacity),
            free_head: Link::NIL,
            len: 0,
        }
    }

    /// Number of pending nodes.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Stores a pending node, in no list yet, and returns its index: a free node if
    /// there is one, else a new one at the end.
    ///
    /// # Panics
    ///
    /// If more than `u32::MAX - 1` nodes would be pending at once.
    #[inline]
    pub(super) fn insert(&mut self, deadline: u64, value: T) -> usize {
        let node = Node::Pending {
            deadline,
            prev: Link::NIL,
            next: Link::NIL,
            value,
        };
        let index = if let Some(index) = self.free_head.index()
            && let Some(&Node::Free { next_free }) = self.nodes.get(index)
        {
            self.free_head = next_free;
            self.nodes[index] = node;
            self.generations[index] = self.generations[index].wrapping_add(1);
            index
        } else {
            assert!(
                self.nodes.len() < MAX_NODES,
                "TimingWheel holds at most {MAX_NODES} timers"
            );
            self.nodes.push(node);
            self.generations.push(0);
            self.nodes.len() - 1
        };
        self.len += 1;
        index
    }

    /// The key of the node at `index` as it is now.
    #[inline]
    pub(super) fn key(&self, index: usize) -> TimerKey {
        TimerKey {
            index: index as u32,
            generation: self.generations[index],
        }
    }

    /// Index and deadline of the timer `key` names, if it is still pending.
    #[inline]
    pub(super) fn pending(&self, key: TimerKey) -> Option<(usize, u64)> {
        let index = key.index as usize;
        if self.generations.get(index) != Some(&key.generation) {
            return None;
        }
        match self.nodes.get(index) {
            Some(Node::Pending { deadline, .. }) => Some((index, *deadline)),
            _ => None,
        }
    }

    /// Value of a pending node.
    #[inline]
    pub(super) fn value(&self, index: usize) -> Option<&T> {
        match self.nodes.get(index) {
            Some(Node::Pending { value, .. }) => Some(value),
            _ => None,
        }
    }

    /// Sets the deadline of a pending node, which must be in no list.
    #[inline]
    pub(super) fn set_deadline(&mut self, index: usize, deadline_ms: u64) {
        if let Node::Pending { deadline, .. } = &mut self.nodes[index] {
            *deadline = deadline_ms;
        }
    }

    /// The node after `index` in its list (`Link::NIL` at the end).
    #[inline]
    pub(super) fn next(&self, index: usize) -> Link {
        match &self.nodes[index] {
            Node::Pending { next, .. } => *next,
            Node::Free { .. } => Link::NIL,
        }
    }

    /// Deadline and successor of the pending node `link` points at; None at the end of
    /// a list.
    #[inline]
    pub(super) fn read(&self, link: Link) -> Option<(usize, u64, Link)> {
        let index = link.index()?;
        match self.nodes.get(index) {
            Some(Node::Pending { deadline, next, .. }) => Some((index, *deadline, *next)),
            _ => None,
        }
    }

    /// Appends a pending node to the tail of `list`. Appending, never inserting in the
    /// middle, is what preserves insertion order among equal deadlines.
    #[inline]
    pub(super) fn push_back(&mut self, list: &mut List, index: usize) {
        let link = Link::to(index);
        let tail = list.tail;
        if let Node::Pending { prev, next, .. } = &mut self.nodes[index] {
            *prev = tail;
            *next = Link::NIL;
        }
        match tail.index() {
            Some(tail) => self.nodes[tail].set_next(link),
            None => list.head = link,
        }
        list.tail = link;
    }

    /// Takes a pending node out of `list`, which must be the list it is in.
    #[inline]
    pub(super) fn unlink(&mut self, list: &mut List, index: usize) {
        let (prev, next) = match &self.nodes[index] {
            Node::Pending { prev, next, .. } => (*prev, *next),
            Node::Free { .. } => return,
        };
        match prev.index() {
            Some(prev_index) => self.nodes[prev_index].set_next(next),
            None => list.head = next,
        }
        match next.index() {
            Some(next_index) => self.nodes[next_index].set_prev(prev),
            None => list.tail = prev,
        }
    }

    /// Frees a pending node that is in no list any more, returning its deadline and value.
    #[inline]
    pub(super) fn release(&mut self, index: usize) -> Option<(u64, T)> {
        if !matches!(self.nodes[index], Node::Pending { .. }) {
            return None;
        }
        let node = mem::replace(
            &mut self.nodes[index],
            Node::Free {
                next_free: self.free_head,
            },
        );
        self.free_head = Link::to(index);
        self.len -= 1;
        match node {
            Node::Pending {
                deadline, value, ..
            } => Some((deadline, value)),
            Node::Free { .. } => None,
        }
    }

    /// Earliest deadline in `list`, by walking it.
    pub(super) fn min_deadline(&self, list: &List) -> Option<u64> {
        let mut cursor = list.head;
        let mut min = None;
        while let Some((_, deadline, next)) = self.read(cursor) {
            min = Some(min.map_or(deadline, |m: u64| m.min(deadline)));
            cursor = next;
        }
        min
    }

    /// Heap bytes of the slab. It never shrinks: a burst of timers leaves its capacity
    /// behind, which is cheaper than reallocating on the next burst.
    pub(super) fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * mem::size_of::<Node<T>>()
            + self.generations.capacity() * mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_fits_in_24_bytes_for_u64() {
        assert_eq!(mem::size_of::<Node<u64>>(), 24);
        assert_eq!(mem::size_of::<Link>(), 4);
    }

    #[test]
    fn lists_keep_append_order_and_unlink_from_anywhere() {
        let mut slab = Slab::with_capacity(0);
        let mut list = List::EMPTY;
        let nodes: Vec<usize> = (0..4).map(|i| slab.insert(10 + i, i)).collect();
        for &index in &nodes {
            slab.push_back(&mut list, index);
        }
        slab.unlink(&mut list, nodes[0]); // the head
        slab.unlink(&mut list, nodes[2]); // the middle
        assert_eq!(slab.min_deadline(&list), Some(11));
        let mut order = Vec::new();
        let mut cursor = list.take();
        while let Some(index) = cursor.index() {
            cursor = slab.next(index);
            order.push(slab.release(index));
        }
        assert_eq!(order, vec![Some((11, 1)), Some((13, 3))]);
        assert!(list.is_empty());
        assert_eq!(slab.len(), 2);
    }

    #[test]
    fn freed_nodes_are_reused_under_a_new_generation() {
        let mut slab = Slab::with_capacity(0);
        let first = slab.insert(5, 'a');
        let old = slab.key(first);
        assert_eq!(slab.release(first), Some((5, 'a')));
        assert_eq!(slab.release(first), None);
        assert_eq!(slab.pending(old), None);
        let second = slab.insert(6, 'b');
        assert_eq!(second, first);
        assert_ne!(slab.key(second), old);
        assert_eq!(slab.pending(slab.key(second)), Some((second, 6)));
        assert_eq!(slab.value(second), Some(&'b'));
        assert_eq!(slab.len(), 1);
    }
}
