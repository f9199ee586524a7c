"""RAP: robustness-aware perturbations (Yang et al., EMNLP 2021), an input-level detector; reimplemented from the
paper's description (no code copied).

Idea: a backdoored model holds its target prediction on a triggered input far more firmly than its prediction
on a clean input. RAP learns one *perturbation word* (a rare token, here ``cf``-like ``DEFAULT_WORD``, put right
after ``[CLS]``) whose embedding is trained so that inserting it lowers the probability of a clean input's
predicted class by a controlled amount ``Δ`` in ``[low, high]`` (default ``[0.1, 0.3]``). At test time a
triggered input loses much less than that. Score = ``-Δ`` (higher = more suspicious); threshold at a chosen FRR
on clean dev inputs.

Only the suspect model and clean data are needed. Differences from the paper (our design): the paper protects
one known target class and trains on clean samples of that class; the defender here does not know the target,
so ``Δ`` is measured on the model's own predicted class of each input and the word is trained on clean inputs of
every class. The model is never modified: the word's embedding is a separate tensor fed through
``inputs_embeds``. Loss per clean input: ``relu(low - Δ) + relu(Δ - high)``; Adam on that one vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..architecture import is_causal

DEFAULT_WORD = "mb"  # the paper's perturbation word is a rare token too
DEFAULT_RANGE = (0.1, 0.3)
DEFAULT_EPOCHS = 5
DEFAULT_LR = 1e-2


def _embeddings(model):
    emb = model.get_input_embeddings()
    if emb is None:
        raise ValueError("RAP needs a model with an input embedding table.")
    return emb


class RAP:
    """A trained RAP perturbation for ``model`` (see the module docstring). ``fit`` then ``score``."""

    def __init__(self, model, tokenizer, word: str = DEFAULT_WORD, prob_range: tuple[float, float] = DEFAULT_RANGE,
                 max_length: int = 128, batch_size: int = 32, seed: int = 0):
        if not 0 <= prob_range[0] < prob_range[1] <= 1:
            raise ValueError("prob_range must be (low, high) with 0 <= low < high <= 1.")
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size, self.seed = max_length, batch_size, seed
        self.range = (float(prob_range[0]), float(prob_range[1]))
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        self.word_id = int(ids[0]) if ids else int(tokenizer.unk_token_id)
        self.vector = _embeddings(model).weight[self.word_id].detach().clone().float()  # (hidden,)
        self.history: list[float] = []

    def _device(self):
        return next(self.model.parameters()).device

    def _encode(self, texts: Sequence[str]):
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length - 1,
                             return_tensors="pt")
        return {k: v.to(self._device()) for k, v in enc.items()}

    def _probs(self, enc, vector: torch.Tensor | None) -> torch.Tensor:
        """``(B, C)`` probabilities; with ``vector``, the perturbation word inserted right after ``[CLS]``."""
        ids, mask = enc["input_ids"], enc["attention_mask"]
        emb = _embeddings(self.model)(ids)  # (B, T, hidden)
        if vector is not None:
            word = vector.to(emb.dtype)[None, None, :].expand(ids.shape[0], 1, -1)
            emb = torch.cat([emb[:, :1], word, emb[:, 1:]], dim=1)
            mask = torch.cat([mask[:, :1], torch.ones_like(mask[:, :1]), mask[:, 1:]], dim=1)
        kwargs = {"inputs_embeds": emb, "attention_mask": mask}
        if "token_type_ids" in enc:
            tt = enc["token_type_ids"]
            kwargs["token_type_ids"] = torch.cat([tt[:, :1], tt[:, :1], tt[:, 1:]], 1) if vector is not None else tt
        if not is_causal(self.model):
            return torch.softmax(self.model(**kwargs).logits.float(), -1)
        # a decoder's classifier given embeddings reads the LAST position, the padding of a shorter text (padding is
        # on the right): one call per length, each without padding
        lengths, out = mask.sum(-1), [None] * mask.shape[0]
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().squeeze(-1)
            logits = self.model(**{k: v[rows, :n] for k, v in kwargs.items()}).logits.float()
            for r, row in zip(rows.tolist(), logits):
                out[r] = row
        return torch.softmax(torch.stack(out), -1)

    def fit(self, clean_texts: Sequence[str], epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR) -> RAP:
        """Train the perturbation vector on clean texts (the model stays frozen and unchanged)."""
        texts = [str(t) for t in clean_texts]
        if not texts:
            raise ValueError("RAP needs clean texts to train its perturbation.")
        was = self.model.training
        self.model.eval()
        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        vec = self.vector.clone().to(self._device()).requires_grad_(True)
        opt = torch.optim.Adam([vec], lr=lr)
        gen = torch.Generator().manual_seed(self.seed)
        low, high = self.range
        try:
            for p in params:
                p.requires_grad_(False)
            for _ in range(epochs):
                losses = []
                order = torch.randperm(len(texts), generator=gen).tolist()
                for s in range(0, len(texts), self.batch_size):
                    enc = self._encode([texts[i] for i in order[s:s + self.batch_size]])
                    with torch.no_grad():
                        base = self._probs(enc, None)
                    pred = base.argmax(-1, keepdim=True)
                    pert = self._probs(enc, vec)
                    delta = base.gather(1, pred)[:, 0] - pert.gather(1, pred)[:, 0]
                    loss = (torch.relu(low - delta) + torch.relu(delta - high)).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
                self.history.append(float(np.mean(losses)))  # mean loss of the epoch
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)
            self.model.train(was)
        self.vector = vec.detach()
        return self

    @torch.no_grad()
    def deltas(self, texts: Sequence[str]) -> np.ndarray:
        """``(N,)`` drop of each input's predicted-class probability when the perturbation word is inserted."""
        texts = [str(t) for t in texts]
        out = []
        was = self.model.training
        self.model.eval()
        try:
            for s in range(0, len(texts), self.batch_size):
                enc = self._encode(texts[s:s + self.batch_size])
                base = self._probs(enc, None)
                pred = base.argmax(-1, keepdim=True)
                pert = self._probs(enc, self.vector.to(self._device()))
                out.append((base.gather(1, pred) - pert.gather(1, pred))[:, 0].cpu().numpy())
        finally:
            self.model.train(was)
        return np.concatenate(out) if out else np.zeros(0)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """``(N,)`` RAP scores, ``-Δ`` (higher = more suspicious)."""
        return -self.deltas(texts)


def rap_scores(model, tokenizer, texts: Sequence[str], clean_texts: Sequence[str], *, max_length: int = 128,
               epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, seed: int = 0,
               prob_range: tuple[float, float] = DEFAULT_RANGE) -> np.ndarray:
    """Train RAP on ``clean_texts`` and score ``texts`` (``(N,)``, higher = more suspicious)."""
    return RAP(model, tokenizer, max_length=max_length, seed=seed, prob_range=prob_range).fit(
        clean_texts, epochs, lr).score(texts)
