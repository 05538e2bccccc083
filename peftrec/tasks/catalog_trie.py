"""Trie-constrained beam search over the item catalog's titles (generative next-item task).

The LM is asked for the next item's title. Left free, it can write titles that do not exist; here every
decoding step may only extend a prefix of a real title (OpenP5, DecodingMatters), so each finished beam
is a catalog item. :class:`CatalogTrie` holds the titles as token-id sequences ending with eos,
:class:`CatalogConstraint` masks the logits during ``generate``, and :func:`constrained_beam_search`
runs a batched beam search and maps the finished beams back to catalog entries.

Why our own: transformers' ``prefix_allowed_tokens_fn`` calls Python once per beam and step on host
lists (a GPU wait at every step) and its ``Constraint`` classes force phrases in, not a closed set of
titles. Here the mask is computed on the device, for all beams at once, from the trie's edges as
sorted tensors (:class:`TrieTensors`): generation never waits on the host for it.

Typical use::

    trie = CatalogTrie.from_titles(items["title"].tolist(), tokenizer)
    ranked = constrained_beam_search(
        model, input_ids, attention_mask, trie, num_beams=20, num_return=10,
        pad_token_id=tokenizer.pad_token_id, excluded=[set(history) for history in histories],
    )
    # ranked[b] = [(entry, ...), ...]: example b's titles, best first, each as its catalog entries
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from peftrec.errors import PeftrecError
from peftrec.methods.generation_compat import check_multi_step_generation
from peftrec.methods.virtual_tokens import prepended_tokens

_ROOT = 0


class CatalogTrie:
    """Prefix trie over the catalog's titles as token-id sequences, each ending with eos.

    Entry ``i`` is catalog entry ``i`` (the caller keeps the map to item ids). Two entries with the same
    title share one leaf (a beam that writes that title names both); a title may be a prefix of another
    (its node ends a title *and* has children).

    Args:
        sequences: ``sequences[i]`` = token ids of entry ``i``'s title, without eos.
        eos_token_id: the token that ends every title.

    Raises:
        PeftrecError: no titles, an empty title, or a title that contains the eos token.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], eos_token_id: int):
        if len(sequences) == 0:
            raise PeftrecError("the catalog has no titles: give at least one item with a title")
        self._eos = int(eos_token_id)
        # Node 0 is the root; node k's children map a token id to a node id. Flat lists keep a walk to
        # plain dict lookups (no per-node objects).
        self._children: list[dict[int, int]] = [{}]
        self._parent: list[int] = [-1]
        self._ends: list[list[int]] = [[]]  # entries whose title ends at the node
        self._leaf: list[int] = []  # node where each entry's title ends
        self._targets: list[tuple[int, ...]] = []
        for entry, sequence in enumerate(sequences):
            ids = tuple(int(t) for t in sequence)
            if not ids:
                raise PeftrecError(
                    f"catalog entry {entry} has an empty title (no tokens): give every item a non-empty title"
                )
            if self._eos in ids:
                raise PeftrecError(
                    f"catalog entry {entry}'s title contains the eos token {self._eos}: a generated title "
                    "would stop there; remove that token from the title or pick another eos token"
                )
            node = _ROOT
            for token in ids:
                child = self._children[node].get(token)
                if child is None:
                    child = len(self._children)
                    self._children[node][token] = child
                    self._children.append({})
                    self._parent.append(node)
                    self._ends.append([])
                node = child
            self._ends[node].append(entry)
            self._leaf.append(node)
            self._targets.append((*ids, self._eos))
        self._entries_at: list[tuple[int, ...]] = [tuple(e) for e in self._ends]
        # Entries at or below each node: with the excluded entries below it, tells whether a beam that
        # enters the node can still finish a title it is allowed to produce.
        self._below = [0] * len(self._children)
        for entry in range(len(self._leaf)):
            for node in self.path(entry):
                self._below[node] += 1
        self._num_titles = sum(1 for e in self._ends if e)
        self._max_length = max(len(t) for t in self._targets)
        self._max_token_id = max(max(t) for t in self._targets)
        self._tensors: dict[tuple[torch.device, int], TrieTensors] = {}

    @classmethod
    def from_titles(
        cls,
        titles: Sequence[str],
        tokenizer: PreTrainedTokenizerBase,
        *,
        eos_token_id: int | None = None,
    ) -> CatalogTrie:
        """Tokenize titles (one batched call, no special tokens) and build the trie.

        The titles are tokenized on their own, so the training target must be these same ids
        (:meth:`target`) appended to the prompt's ids, never the re-tokenized ``prompt + title`` text
        (BPE can merge across the boundary).

        Args:
            titles: ``titles[i]`` = catalog entry ``i``'s title, exactly as the model should write it
                (including any leading space the prompt format expects).
            tokenizer: the model's tokenizer.
            eos_token_id: the token that ends a title; defaults to ``tokenizer.eos_token_id``.

        Returns:
            The trie.

        Raises:
            PeftrecError: no eos token, or a title that tokenizes to nothing.
        """
        eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        if eos is None:
            raise PeftrecError(
                "the tokenizer has no eos token to end a title: pass eos_token_id= (e.g. the chat end token)"
            )
        ids = tokenizer(list(titles), add_special_tokens=False)["input_ids"] if len(titles) else []
        return cls(ids, eos)

    # --- structure -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of catalog entries (titles shared by several entries counted once per entry)."""
        return len(self._targets)

    @property
    def num_titles(self) -> int:
        """Number of distinct titles (the most distinct beams a search can return)."""
        return self._num_titles

    @property
    def eos_token_id(self) -> int:
        """The token that ends every title."""
        return self._eos

    @property
    def max_length(self) -> int:
        """Longest target in tokens, eos included: ``max_new_tokens`` for generation."""
        return self._max_length

    @property
    def max_token_id(self) -> int:
        """Largest token id in any target (eos included); must be below the model's vocabulary size."""
        return self._max_token_id

    def target(self, entry: int) -> list[int]:
        """Entry's title ids followed by eos: the training target.

        Args:
            entry: catalog entry index.

        Returns:
            Token ids.
        """
        return list(self._targets[entry])

    def entries_at(self, node: int) -> tuple[int, ...]:
        """Catalog entries whose title ends at ``node`` (``()`` for an inner node)."""
        return self._entries_at[node]

    def path(self, entry: int) -> list[int]:
        """Nodes from the root (node 0) down to the node where ``entry``'s title ends."""
        nodes, node = [], self._leaf[entry]
        while node != -1:
            nodes.append(node)
            node = self._parent[node]
        return nodes[::-1]

    def entries_below(self, node: int) -> int:
        """Number of catalog entries whose title ends at ``node`` or below it."""
        return self._below[node]

    def children(self, node: int) -> dict[int, int]:
        """``{token id: child node}`` of ``node`` (shared: do not modify it)."""
        return self._children[node]

    def node(self, prefix: Sequence[int]) -> int | None:
        """Node reached by walking ``prefix`` (title tokens, no eos) from the root; None if it leaves the trie."""
        node = _ROOT
        children = self._children
        for token in prefix:
            node = children[node].get(int(token))
            if node is None:
                return None
        return node

    @property
    def num_nodes(self) -> int:
        """Number of trie nodes, the root included."""
        return len(self._children)

    def tensors(self, device: torch.device | str, vocab: int) -> TrieTensors:
        """The trie's edges as device tensors for a model with ``vocab`` logits (built once per device)."""
        device = torch.device(device)
        key = (device, int(vocab))
        if key not in self._tensors:
            self._tensors[key] = TrieTensors.build(self, device, int(vocab))
        return self._tensors[key]

    # --- lookups -------------------------------------------------------------------------------------

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens allowed next after a generated prefix.

        Args:
            prefix: tokens generated so far (no prompt).

        Returns:
            Sorted token ids: the node's children, plus eos where a title ends there; ``[]`` when the
            prefix left the trie or already ended with eos.
        """
        node = self.node_after(prefix)
        if node is None:
            return []
        return sorted([*self._children[node], *([self._eos] if self._ends[node] else [])])

    def node_after(self, generated: Sequence[int]) -> int | None:
        """Node a generated prefix has reached, for choosing its next token.

        Args:
            generated: tokens generated so far (no prompt).

        Returns:
            The node; None when the prefix left the trie or contains eos (the title is done).
        """
        node = _ROOT
        children = self._children
        for token in generated:
            token = int(token)
            if token == self._eos:
                return None
            node = children[node].get(token)
            if node is None:
                return None
        return node

    def entries(self, generated: Sequence[int]) -> tuple[int, ...]:
        """Catalog entries whose title is exactly ``generated``.

        Args:
            generated: generated tokens; everything from the first eos on (the eos and any padding after
                it) is ignored. Without an eos the whole sequence is taken as the title.

        Returns:
            The entries, in catalog order; ``()`` when ``generated`` is not a complete title.
        """
        ids = [int(t) for t in generated]
        if self._eos in ids:
            ids = ids[: ids.index(self._eos)]
        node = self.node(ids)
        return () if node is None else self._entries_at[node]


@dataclass(frozen=True)
class TrieTensors:
    """A :class:`CatalogTrie` on the device: its edges sorted by ``(node, token)``, walked for all rows at once.

    Edge ``e`` goes from node ``edge_key[e] // vocab`` by token ``edge_key[e] % vocab`` to ``edge_child[e]``;
    node ``n``'s edges are ``first_edge[n]:first_edge[n + 1]``, so sorted keys make a step of a walk one
    ``searchsorted`` and a node's next tokens one gather. One extra node, ``dead``, has no edges and ends
    no title: a row that leaves the trie (or writes eos, never an edge) goes there and stays.
    """

    edge_key: torch.Tensor  # (edges + spare,) node * vocab + token, ascending; spare keys above them all
    edge_token: torch.Tensor  # (edges + spare,)
    edge_child: torch.Tensor  # (edges + spare,)
    first_edge: torch.Tensor  # (nodes + 2,)
    ends: torch.Tensor  # (nodes + 1,) bool: a title ends at the node
    vocab: int
    dead: int
    max_children: int

    @classmethod
    def build(cls, trie: CatalogTrie, device: torch.device, vocab: int) -> TrieTensors:
        """Lay out ``trie``'s edges for ``device`` (one host-to-device copy per tensor)."""
        dead = trie.num_nodes
        keys, tokens, children, first = [], [], [], [0]
        for node in range(trie.num_nodes):
            for token, child in sorted(trie.children(node).items()):
                keys.append(node * vocab + token)
                tokens.append(token)
                children.append(child)
            first.append(len(keys))
        first.append(len(keys))  # the dead node: no edges
        widest = max(b - a for a, b in zip(first, first[1:], strict=False))
        # Spare edges after the real ones, with keys above every real one: searchsorted always lands on
        # an edge, and a row's padded slots (up to the widest node's count past its first edge) exist.
        keys += [(dead + 1) * vocab] * widest
        tokens += [0] * widest
        children += [dead] * widest
        ends = [bool(trie.entries_at(node)) for node in range(trie.num_nodes)] + [False]

        def put(values: list, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype).to(device)

        return cls(
            put(keys), put(tokens), put(children), put(first), put(ends, torch.bool), vocab, dead, widest
        )

    def walk(self, generated: torch.Tensor) -> torch.Tensor:
        """Node each row's generated tokens reach: ``dead`` where a row left the trie or wrote eos.

        Args:
            generated: ``(rows, steps)`` tokens generated so far.

        Returns:
            ``(rows,)`` node ids.
        """
        node = torch.zeros(generated.shape[0], dtype=torch.long, device=generated.device)
        for step in range(generated.shape[1]):
            key = generated[:, step].add(node, alpha=self.vocab)
            edge = torch.searchsorted(self.edge_key, key)
            node = torch.where(self.edge_key[edge] == key, self.edge_child[edge], self.dead)
        return node

    def next_edges(self, node: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's outgoing edges, padded to the widest node: ``(edge, valid)``, both ``(rows, max_children)``."""
        start = self.first_edge[node]
        slot = torch.arange(self.max_children, device=node.device)
        valid = slot < (self.first_edge[node + 1] - start)[:, None]
        return start[:, None] + slot, valid


def _contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Elementwise: is each of ``keys`` in the ascending 1-D tensor ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    at = torch.searchsorted(sorted_keys, keys).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[at] == keys


class CatalogConstraint(LogitsProcessor):
    """Sets every token the trie does not allow after each row's generated part to -inf.

    In beam search, ``generate`` hands the processor log-probabilities (after ``log_softmax``); masking
    without renormalising keeps each finished beam's score equal to the LM's log p(title, eos | prompt).

    Exclusions: where a title ends whose entries are all excluded for the row's example, eos is not
    allowed, but the beam may still continue into longer titles through the node's children. A child
    below which every entry is excluded is not allowed either, so a beam never walks into a dead end
    and wastes its slot. A row whose allowed set is empty (it left the trie or already ended) gets -inf
    everywhere.

    Args:
        trie: the catalog.
        prompt_length: width of the (left-padded) prompt; ``input_ids[r, prompt_length:]`` is generated.
        num_beams: rows per example: row ``r`` belongs to example ``r // num_beams``.
        excluded: ``excluded[b]`` = catalog entries example ``b`` must not produce (its history).

    Raises:
        PeftrecError: ``num_beams < 1`` or an excluded entry that is not in the catalog.
    """

    def __init__(
        self,
        trie: CatalogTrie,
        prompt_length: int,
        *,
        num_beams: int,
        excluded: Sequence[Collection[int]] | None = None,
    ):
        if num_beams < 1:
            raise PeftrecError(f"num_beams must be at least 1, got {num_beams}")
        self.trie = trie
        self.prompt_length = int(prompt_length)
        self.num_beams = int(num_beams)
        self.excluded = None if excluded is None else [_entry_set(ex, trie) for ex in excluded]
        # The exclusion rule as two sorted key lists, ``example * nodes + node``: nodes a beam may not enter
        # (every entry at or below them excluded) and nodes where it may not write eos (every entry ending
        # there excluded). Only nodes on an excluded entry's path can be in either.
        self._closed: list[int] = []
        self._no_eos: list[int] = []
        for example, entries in enumerate(self.excluded or ()):
            below: dict[int, int] = {}
            for entry in entries:
                for node in trie.path(entry):
                    below[node] = below.get(node, 0) + 1
            at = example * trie.num_nodes
            self._closed += sorted(at + n for n, count in below.items() if count == trie.entries_below(n))
            self._no_eos += sorted(
                at + n for n in below if trie.entries_at(n) and entries.issuperset(trie.entries_at(n))
            )
        self._device_exclusions: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, vocab = scores.shape
        if self.trie.max_token_id >= vocab:
            raise PeftrecError(
                f"the catalog uses token id {self.trie.max_token_id} but the model has {vocab} logits: "
                "build the trie with the model's own tokenizer"
            )
        if rows % self.num_beams:
            raise PeftrecError(f"{rows} rows are not a whole number of examples of {self.num_beams} beams")
        if self.excluded is not None and len(self.excluded) != rows // self.num_beams:
            raise PeftrecError(
                f"excluded lists {len(self.excluded)} examples but the batch has {rows // self.num_beams}: "
                "give one collection per example"
            )
        # Everything below stays on the device: no value is read back, so the host keeps queueing.
        trie = self.trie.tensors(scores.device, vocab)
        node = trie.walk(input_ids[:, self.prompt_length :])
        edge, valid = trie.next_edges(node)
        can_end = trie.ends[node]
        if self.excluded is not None:
            closed, no_eos = self._exclusions(scores.device)
            at = torch.arange(rows, device=scores.device) // self.num_beams * self.trie.num_nodes
            valid &= ~_contains(closed, at[:, None] + trie.edge_child[edge])
            can_end &= ~_contains(no_eos, at + node)
        # Start from all -inf and put each allowed token's score back: one pass over the vocabulary. The
        # padded slots of a row carry -inf, and taking the max keeps them from overwriting a real token
        # that shares their index.
        tokens = trie.edge_token[edge]
        allowed = torch.where(valid, scores.gather(1, tokens), float("-inf"))
        out = torch.full_like(scores, float("-inf"))
        out.scatter_reduce_(1, tokens, allowed, reduce="amax")
        eos = self.trie.eos_token_id
        out[:, eos] = torch.where(can_end, scores[:, eos], float("-inf"))
        return out

    def _exclusions(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The closed and no-eos keys on ``device`` (copied there once per search)."""
        if device not in self._device_exclusions:
            self._device_exclusions[device] = (
                torch.tensor(self._closed, dtype=torch.long).to(device),
                torch.tensor(self._no_eos, dtype=torch.long).to(device),
            )
        return self._device_exclusions[device]


def _entry_set(entries: Collection[int], trie: CatalogTrie) -> frozenset[int]:
    result = frozenset(int(e) for e in entries)
    bad = sorted(e for e in result if not 0 <= e < len(trie))
    if bad:
        raise PeftrecError(
            f"excluded entries {bad[:5]} are not in the catalog (0..{len(trie) - 1}): pass catalog entry "
            "indices (positions in the titles list), not item ids"
        )
    return result


def to_left_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's padding from the end to the front (a decoder-only LM generates after the last column).

    Args:
        input_ids: ``(batch, seq)`` right-padded ids (real tokens first, then padding).
        attention_mask: ``(batch, seq)``, 1 on real tokens.

    Returns:
        ``(input_ids, attention_mask)`` with the same rows left-padded (pad positions keep their ids).

    Raises:
        PeftrecError: a row is not right-padded (a 0 before a 1) or has no real token.
    """
    ids, mask, _ = _left_padded(input_ids, attention_mask)
    return ids, mask


def _left_padded(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """:func:`to_left_padding`, plus each row's length, with one read of the device for the checks and lengths."""
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise PeftrecError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must be "
            "the same (batch, seq) shape"
        )
    mask = attention_mask.long()
    seq = mask.shape[1]
    lengths = mask.sum(dim=1)
    columns = torch.arange(seq, device=mask.device)
    right_padded = (mask == (columns[None, :] < lengths[:, None])).all()
    *row_lengths, is_right_padded = torch.cat([lengths, right_padded.long().view(1)]).tolist()
    if not is_right_padded:
        raise PeftrecError("the batch is not right-padded (padding before a real token): pad on the right")
    if 0 in row_lengths:
        raise PeftrecError("a prompt in the batch has no tokens: drop empty prompts before generation")
    # Rotating each row right by its padding count puts the padding in front and keeps token order.
    source = (columns[None, :] - (seq - lengths)[:, None]) % seq
    return input_ids.gather(1, source), attention_mask.gather(1, source), row_lengths


@torch.inference_mode()
def constrained_beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: CatalogTrie,
    *,
    num_beams: int,
    num_return: int,
    pad_token_id: int,
    excluded: Sequence[Collection[int]] | None = None,
) -> list[list[tuple[int, ...]]]:
    """Batched beam search that can only write catalog titles; returns each example's ranked titles.

    Runs ``model.generate`` (beam search, no sampling, :class:`CatalogConstraint`, at most
    ``trie.max_length`` new tokens) on the batch converted to left padding. ``model`` may be a
    transformers causal LM or a peft model around one: LoRA and the other weight-based heads, prefix
    tuning (its prefix is a KV cache, which ``generate`` expands to the beams), and prompt tuning /
    p-tuning. The model is put in eval mode (no dropout) and given neutral generation defaults for the
    call; both are restored after.

    Prompt tuning and p-tuning put their virtual tokens in front of the padding, and peft drops the
    position ids ``generate`` computes from the mask, so left padding would change the distance between
    the virtual tokens and the prompt (scores then depend on the batch). For those heads the batch is
    searched in groups of equal prompt length, which need no padding at all.

    Args:
        model: causal LM or peft model.
        input_ids: ``(batch, seq)`` right-padded prompts.
        attention_mask: ``(batch, seq)``, 1 on real tokens.
        trie: the catalog.
        num_beams: beams per example (the search keeps this many prefixes alive).
        num_return: titles to return per example (at most ``num_beams``).
        pad_token_id: id for padding (prompt padding and finished beams).
        excluded: ``excluded[b]`` = catalog entries example ``b`` must not get (e.g. its history).

    Returns:
        Per example, its distinct titles best first (at most ``num_return``), each as the tuple of its
        catalog entries minus the example's excluded ones. Fewer than ``num_return`` when the catalog
        (less exclusions) has fewer titles.

    Raises:
        PeftrecError: ``num_return`` out of ``1..num_beams``, a malformed batch, or a head whose
            generation the installed library versions break (:func:`check_multi_step_generation`).
    """
    if not 1 <= num_return <= num_beams:
        raise PeftrecError(
            f"num_return={num_return} must be between 1 and num_beams={num_beams}: raise num_beams"
        )
    batch = input_ids.shape[0]
    if excluded is not None and len(excluded) != batch:
        raise PeftrecError(
            f"excluded has {len(excluded)} entries for a batch of {batch}: give one per example"
        )
    check_multi_step_generation(model)
    device = _device_of(model)
    ids, mask, lengths = _left_padded(input_ids.to(device), attention_mask.to(device))
    ids = ids.masked_fill(mask == 0, pad_token_id)
    if prepended_tokens(model):
        groups = [[r for r in range(batch) if lengths[r] == n] for n in sorted(set(lengths))]
    else:
        groups = [list(range(batch))]
    results: list[list[tuple[int, ...]]] = [[] for _ in range(batch)]
    with _generation_state(model):
        for rows in groups:
            width = ids.shape[1] - max(lengths[r] for r in rows)  # padding all rows share
            found = _search(
                model,
                ids[rows, width:],
                mask[rows, width:],
                trie,
                num_beams=num_beams,
                num_return=num_return,
                pad_token_id=pad_token_id,
                excluded=None if excluded is None else [excluded[r] for r in rows],
            )
            for row, ranked in zip(rows, found, strict=True):
                results[row] = ranked
    return results


def _search(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    trie: CatalogTrie,
    *,
    num_beams: int,
    num_return: int,
    pad_token_id: int,
    excluded: Sequence[Collection[int]] | None,
) -> list[list[tuple[int, ...]]]:
    """One ``generate`` call on a left-padded batch, finished beams mapped to catalog entries."""
    constraint = CatalogConstraint(trie, ids.shape[1], num_beams=num_beams, excluded=excluded)
    config = GenerationConfig(
        num_beams=num_beams,
        num_return_sequences=num_return,
        do_sample=False,
        max_new_tokens=trie.max_length,
        pad_token_id=pad_token_id,
        eos_token_id=trie.eos_token_id,
        # length_penalty 0: a finished beam's score is the plain sum of log-probs, log p(title, eos |
        # prompt), so titles are ranked by the LM's probability of the item. HF's default 1.0 divides by
        # the length, which favours long titles whose later tokens are near-certain once the prefix is
        # fixed (DecodingMatters' amplification bias) and ranks items of different lengths on different
        # scales. With 0, HF's early stop (best running score below the worst finished one) is also
        # exact: adding a token can only lower a score.
        length_penalty=0.0,
        early_stopping=False,
        use_cache=True,
    )
    with warnings.catch_warnings():
        # peft warns at every step of a prompt-tuning model that it ignores position ids; harmless here
        # (the groups have no padding, so the default positions are the right ones).
        warnings.filterwarnings("ignore", message="Position ids are not supported", category=UserWarning)
        sequences = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([constraint]),
        )
    # Rows come back grouped per example, best first (HF keeps finished beams sorted by score).
    generated = sequences[:, ids.shape[1] :].tolist()
    results = []
    for example in range(ids.shape[0]):
        skip = set() if constraint.excluded is None else constraint.excluded[example]
        seen, ranked = set(), []
        for row in generated[example * num_return : (example + 1) * num_return]:
            if trie.eos_token_id not in row:
                continue  # a placeholder beam (fewer titles than beams) or one cut by the length limit
            entries = tuple(e for e in trie.entries(row) if e not in skip)
            # Duplicates: beam search seeds its spare beams with copies of the first one, and those
            # can finish the same title with a lower score.
            if entries and entries not in seen:
                seen.add(entries)
                ranked.append(entries)
        results.append(ranked)
    return results


def _device_of(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


@contextlib.contextmanager
def _generation_state(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and a blank default generation config for the call; the caller's state comes back after.

    ``generate`` fills every option the call leaves unset from ``model.generation_config`` (a checkpoint's
    sampling or penalty defaults), so the defaults are blanked while it runs. A peft model reads the
    base model's config, so swapping the base model's covers both.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    modes = [(module, module.training) for module in model.modules()]
    had_config = "generation_config" in vars(base)
    saved = getattr(base, "generation_config", None)
    model.eval()
    base.generation_config = GenerationConfig()
    try:
        yield
    finally:
        if had_config:
            base.generation_config = saved
        else:
            with contextlib.suppress(AttributeError):
                del base.generation_config
        for module, training in modes:
            module.training = training
