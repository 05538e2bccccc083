"""SASRec (Kang & McAuley, ICDM 2018), compact: self-attentive next-item model trained on rating sequences.

Item embedding (x sqrt(hidden)) + learned positional embedding, dropout, ``blocks`` causal pre-norm
``nn.TransformerEncoderLayer`` blocks (one head, feed-forward width = hidden, ReLU), a final LayerNorm;
the hidden state at position t scores item j as ``h_t . E_j`` (shared input/output embedding). Loss:
binary cross-entropy of the next item against one negative per position, drawn uniformly from the
items the user never rated. Adam, lr 1e-3, betas (0.9, 0.98), as the original.

Differences from the original, each for a reason:

- Sequences are right-padded, so causal attention never sees a padding key (with left padding the
  first rows would attend to nothing but padding). Positions are still counted from the end, as the
  original's left-padded positions are: the last item always sits at position ``max_len - 1``.
- Every transition of a user is a training target: a sequence longer than ``max_len + 1`` is cut into
  windows of ``max_len + 1`` items from its end (LlamaRec's sliding window), where the original kept
  only the last ``max_len``.
- ``nn.TransformerEncoderLayer`` (pre-norm) instead of the original's layer, which normalises the
  queries only: torch's fused attention and no hand-written one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from peftrec.data import sort_events

SCORE_BATCH = 512  # histories per forward pass when scoring


@dataclass(frozen=True)
class SASRecConfig:
    """SASRec hyperparameters (the paper's ML-1M settings; ``epochs`` sized for ML-100K on 2 CPU cores)."""

    hidden: int = 64
    max_len: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 60


class SASRec(nn.Module):
    """The network: ``forward(items, positions)`` -> hidden states (batch, length, hidden).

    Args:
        n_items: Catalog size; item indices run 1..n_items, 0 is padding.
        config: Hyperparameters.
    """

    def __init__(self, n_items: int, config: SASRecConfig):
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.hidden,
            config.heads,
            dim_feedforward=config.hidden,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        self.scale = math.sqrt(config.hidden)
        # Small embeddings (the PyTorch port's xavier init): N(0, 1) x sqrt(hidden) would saturate the BCE.
        nn.init.xavier_normal_(self.item_emb.weight)
        nn.init.xavier_normal_(self.pos_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, items: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.item_emb(items) * self.scale + self.pos_emb(positions))
        length = items.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=items.device)
        return self.norm(self.encoder(x, mask=causal, is_causal=True))


@dataclass(eq=False)
class FittedSASRec:
    """A trained SASRec and its item vocabulary (index k + 1 in the model is ``vocab[k]``)."""

    model: SASRec
    vocab: pd.Index
    config: SASRecConfig

    def score(self, histories: Sequence[Sequence[str]], item_ids: Sequence[str]) -> np.ndarray:
        """Scores of every catalog item after each history (its last ``max_len`` known items).

        Args:
            histories: Per example, item ids oldest first (ids outside the vocabulary are dropped).
            item_ids: The catalog to score (every id must be in the vocabulary).

        Returns:
            float32 (len(histories), len(item_ids)); all zeros for a history with no known item.
        """
        columns = self.vocab.get_indexer(pd.Index(item_ids, dtype=object))
        if (columns < 0).any():
            raise ValueError("item_ids holds items that SASRec was not built with")
        out = np.zeros((len(histories), len(columns)), dtype=np.float32)
        sequences = [self._indices(h) for h in histories]
        self.model.eval()
        with torch.no_grad():
            catalog = self.model.item_emb.weight[torch.from_numpy(columns + 1)]
            for start in range(0, len(sequences), SCORE_BATCH):
                batch = sequences[start : start + SCORE_BATCH]
                rows = [k for k, s in enumerate(batch) if len(s)]
                if not rows:
                    continue
                items, positions, lengths = pad_right([batch[k] for k in rows], self.config.max_len)
                hidden = self.model(torch.from_numpy(items), torch.from_numpy(positions))
                last = hidden[torch.arange(len(rows)), torch.from_numpy(lengths - 1)]
                out[start + np.asarray(rows)] = (last @ catalog.T).numpy()
        return out

    def _indices(self, history: Sequence[str]) -> np.ndarray:
        index = self.vocab.get_indexer(pd.Index(list(history), dtype=object))
        return (index[index >= 0] + 1)[-self.config.max_len :]


def pad_right(sequences: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-pad sequences (each at most ``max_len``) with 0; positions count from the end (module doc).

    Returns:
        ``(items, positions, lengths)``: int64 (n, max_len), int64 (n, max_len), int64 (n,).
    """
    items = np.zeros((len(sequences), max_len), dtype=np.int64)
    positions = np.zeros_like(items)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    for row, seq in enumerate(sequences):
        items[row, : len(seq)] = seq
        positions[row, : len(seq)] = np.arange(max_len - len(seq), max_len)
    return items, positions, lengths


def training_windows(sequences: Sequence[np.ndarray], max_len: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Cut each user's sequence into windows of at most ``max_len + 1`` items, from its end.

    Returns:
        ``(windows, owner)``: one array per window (input = window[:-1], target = window[1:]) and the
        index of the sequence it came from.
    """
    windows, owner = [], []
    for k, seq in enumerate(sequences):
        for end in range(len(seq), 1, -max_len):
            windows.append(seq[max(0, end - max_len - 1) : end])
            owner.append(k)
    return windows, np.asarray(owner, dtype=np.int64)


def fit_sasrec(
    train_events: pd.DataFrame,
    item_ids: Sequence[str],
    *,
    config: SASRecConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FittedSASRec:
    """Train SASRec on each user's training events in canonical event order.

    Args:
        train_events: ``user_id``, ``item_id``, ``rating``, ``timestamp`` (every rating is an interaction).
        item_ids: The catalog; items only in ``train_events`` are added to the vocabulary after it.
        config: Hyperparameters (defaults when omitted).
        seed: Seeds the initialisation, dropout, window order and negatives; the global torch RNG is
            left as it was.
        progress: Show a tqdm bar over epochs.

    Returns:
        The trained model with its vocabulary.
    """
    config = config or SASRecConfig()
    events = sort_events(train_events)
    vocab = pd.Index(list(dict.fromkeys([*item_ids, *events["item_id"].unique()])), dtype=object)
    items = vocab.get_indexer(events["item_id"]) + 1
    users, _ = pd.factorize(events["user_id"])
    by_user = np.argsort(users, kind="stable")  # stable: keeps each user's events in time order
    bounds = np.flatnonzero(np.diff(users[by_user])) + 1
    sequences = np.split(items[by_user], bounds)
    windows, owner = training_windows(sequences, config.max_len)
    if not windows:
        raise ValueError("SASRec needs at least one user with two training events")
    inputs, positions, _ = pad_right([w[:-1] for w in windows], config.max_len)
    targets, _, _ = pad_right([w[1:] for w in windows], config.max_len)
    seen = np.unique(users[by_user].astype(np.int64) * (len(vocab) + 1) + items[by_user])

    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SASRec(len(vocab), config)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
        bar = tqdm(range(config.epochs), desc="SASRec", unit="epoch", disable=not progress)
        for _ in bar:
            negatives = _sample_negatives(rng, owner, len(vocab), seen, targets.shape)
            model.train()
            total, count = 0.0, 0
            for rows in np.array_split(
                rng.permutation(len(windows)), max(1, len(windows) // config.batch_size)
            ):
                loss = _bce_loss(
                    model, *(torch.from_numpy(a[rows]) for a in (inputs, positions, targets, negatives))
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * len(rows), count + len(rows)
            bar.set_postfix(loss=f"{total / count:.4f}")
    return FittedSASRec(model.eval(), vocab, config)


def _bce_loss(
    model: SASRec,
    inputs: torch.Tensor,
    positions: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
) -> torch.Tensor:
    hidden = model(inputs, positions)
    pos = (hidden * model.item_emb(targets)).sum(-1)
    neg = (hidden * model.item_emb(negatives)).sum(-1)
    valid = targets > 0
    bce = nn.functional.binary_cross_entropy_with_logits
    return bce(pos[valid], torch.ones_like(pos[valid])) + bce(neg[valid], torch.zeros_like(neg[valid]))


def _sample_negatives(
    rng: np.random.Generator, owner: np.ndarray, n_items: int, seen: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """One item per position, uniform over 1..n_items, redrawn (a few rounds) while the user rated it."""
    negatives = rng.integers(1, n_items + 1, size=shape)
    user_codes = owner[:, None] * (n_items + 1)
    for _ in range(10):
        codes = user_codes + negatives
        hit = seen[np.minimum(np.searchsorted(seen, codes), len(seen) - 1)] == codes
        if not hit.any():
            break
        negatives[hit] = rng.integers(1, n_items + 1, size=int(hit.sum()))
    return negatives
