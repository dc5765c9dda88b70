"""Ruder & Plank's data-selection features and a Bayesian-optimisation search over their weights.

Ruder & Plank, "Learning to select data for transfer learning with Bayesian Optimization",
EMNLP 2017 (https://aclanthology.org/D17-1038). Each source example gets similarity features
(its term distribution against the target domain's) and diversity features (of its own terms);
an example's score is w . phi(x) over z-normalised features; the top-scored examples are kept;
w is searched by Bayesian optimisation against target dev performance.

Choices here: terms are the tokenizer's word pieces (special tokens dropped) of the truncated
input; the target distribution comes from the labelled target train rows; the word-embedding
similarity is the cosine of the backbone's mean-pooled sentence feature to the target centroid,
and quadratic entropy uses cosine distances between the backbone's input word embeddings.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

FEATURES = ("jensen_shannon", "renyi", "cosine", "euclidean", "variational", "bhattacharyya", "embedding_cosine",
            "types", "type_token_ratio", "entropy", "simpson", "renyi_entropy", "quadratic_entropy")
ALPHA = 0.99  # Renyi order, as in Ruder & Plank


def term_distributions(rows: list[dict], vocab: int, special: set[int]) -> torch.Tensor:
    """(N, V) normalised term counts of each row (dense; callers pass chunks)."""
    out = torch.zeros(len(rows), vocab)
    for i, r in enumerate(rows):
        ids = torch.tensor([t for t in r["input_ids"] if t not in special] or [0])
        out[i].index_add_(0, ids, torch.ones(len(ids)))
    return out / out.sum(-1, keepdim=True)


def similarity(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(N, V) example distributions vs (V,) target distribution -> (N, 6) similarity features."""
    m = 0.5 * (p + q)
    kl = lambda a, b: torch.where(a > 0, a * (a / b.clamp(min=1e-12)).log(), torch.zeros_like(a)).sum(-1)
    js = 0.5 * kl(p, m) + 0.5 * kl(q.expand_as(p), m)
    renyi = torch.log((p.pow(ALPHA) * q.pow(1 - ALPHA)).sum(-1).clamp(min=1e-12)) / (ALPHA - 1)
    cosine = (p @ q) / (p.norm(dim=-1) * q.norm()).clamp(min=1e-12)
    euclid = (p - q).norm(dim=-1)
    variational = (p - q).abs().sum(-1)
    bhattacharyya = -torch.log((p * q).sqrt().sum(-1).clamp(min=1e-12))
    return torch.stack([js, renyi, cosine, euclid, variational, bhattacharyya], -1)


def diversity(p: torch.Tensor, rows: list[dict], embeddings: torch.Tensor, special: set[int]) -> torch.Tensor:
    """(N, V) distributions -> (N, 6): types, type-token ratio, entropy, Simpson, Renyi entropy,
    quadratic entropy."""
    logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
    types = (p > 0).sum(-1).float()
    tokens = torch.tensor([max(1, sum(t not in special for t in r["input_ids"])) for r in rows]).float()
    entropy = -(p * logp).sum(-1)
    simpson = p.pow(2).sum(-1)
    renyi = torch.log(p.pow(ALPHA).sum(-1).clamp(min=1e-12)) / (1 - ALPHA)
    quadratic = torch.stack([_quadratic(p_i, embeddings) for p_i in p])
    return torch.stack([types, types / tokens, entropy, simpson, renyi, quadratic], -1)


def _quadratic(p: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Rao's quadratic entropy sum_ij p_i p_j d(i, j), d = cosine distance of word embeddings."""
    idx = p.nonzero().squeeze(-1)
    e = torch.nn.functional.normalize(embeddings[idx], dim=-1)  # (k, H)
    return p[idx] @ (1 - e @ e.T) @ p[idx]


def selection_features(sources: list[dict], target: list[dict], source_emb: torch.Tensor, target_emb: torch.Tensor,
                       word_embeddings: torch.Tensor, special: set[int], chunk: int = 256) -> torch.Tensor:
    """(N, len(FEATURES)) z-normalised features of each source row against the target rows."""
    vocab = word_embeddings.shape[0]
    q = term_distributions(target, vocab, special).mean(0)
    centroid = torch.nn.functional.normalize(target_emb.mean(0), dim=0)
    parts = []
    for i in range(0, len(sources), chunk):
        rows = sources[i:i + chunk]
        p = term_distributions(rows, vocab, special)
        emb_cos = torch.nn.functional.normalize(source_emb[i:i + chunk], dim=-1) @ centroid
        parts.append(torch.cat([similarity(p, q), emb_cos[:, None], diversity(p, rows, word_embeddings, special)], -1))
    phi = torch.cat(parts)
    return (phi - phi.mean(0)) / phi.std(0).clamp(min=1e-6)


def bayes_search(objective, dim: int, n_init: int, n_iter: int, seed: int, candidates: int = 2000):
    """Maximise objective(w), w in [-1, 1]^dim: n_init random points, then n_iter points chosen by
    expected improvement under a Gaussian process (Matern 5/2 + noise). Returns (best w, best
    value, history of values)."""
    from scipy.stats import norm
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import Matern, WhiteKernel
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    with threadpool_limits(1), warnings.catch_warnings():  # small matrices: extra threads only contend
        warnings.simplefilter("ignore", ConvergenceWarning)  # a noise-free objective sits at the noise bound
        xs = list(rng.uniform(-1, 1, (n_init, dim)))
        ys = [objective(x) for x in xs]
        for _ in range(n_iter):
            kernel = Matern(nu=2.5) + WhiteKernel(1e-3, noise_level_bounds=(1e-8, 1.0))
            gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed).fit(np.array(xs), np.array(ys))
            pool = rng.uniform(-1, 1, (candidates, dim))
            mu, sigma = gp.predict(pool, return_std=True)
            z = (mu - max(ys)) / np.maximum(sigma, 1e-9)
            expected = (mu - max(ys)) * norm.cdf(z) + sigma * norm.pdf(z)
            xs.append(pool[int(np.argmax(expected))])
            ys.append(objective(xs[-1]))
    best = int(np.argmax(ys))
    return xs[best], ys[best], ys
