"""MetaKD: meta-teacher learning across domains, then meta-distillation into one domain's student.

Pan, Wang, Qiu, Zhang, Li, Huang. "Meta-KD: A Meta Knowledge Distillation Framework for Language
Model Compression across Domains." ACL 2021. https://aclanthology.org/2021.acl-long.236/
(arXiv: https://arxiv.org/abs/2012.01266). EasyTransfer's paper (Wang et al., CIKM 2021,
section 4.2 and table 10) evaluates it on the four Amazon review domains.

1. Prototype scores (instance-level transferable knowledge). Every training example x_i of
   domain k with label m gets
       t_i = alpha * cos(h(x_i), p[k, m]) + (1 - alpha) * mean_{k' != k} cos(h(x_i), p[k', m])
   where p[k, m] is the class-wise prototype (mean embedding) of domain k's examples of class m
   and h(x) is the mean-pooled last hidden state of the *pre-trained* backbone (before any
   fine-tuning; all-MiniLM-L6-v2 is trained for exactly this pooling). Choices the paper leaves
   open, made here: alpha = 0.5; the cross-domain part is the mean over the other domains that
   have class m (the paper writes a weighted sum with its own factor; with no such domain, the
   own-domain term alone); prototypes come from the training split only. This is
   `typicality.typicality_scores(same_labels=True)` on `toolkit.features.frozen_features`.
2. Meta-teacher: one teacher trained on all domains with the cross-entropy of example i weighted
   by t_i (normalised to mean 1 over the training set so the learning rate keeps its meaning),
   plus `domain_weight` times a domain-corruption loss (feature-level transferable knowledge): a
   small head reads the mean of the token states (without [CLS]) plus a learned domain embedding
   and must predict *shuffled* domain labels, which pushes the encoder towards domain-invariant
   features (the choice of the authors' EasyNLP code; the paper calls it a domain-adversarial loss).
3. Meta-distillation into each domain's student (initialised from the meta-teacher's bottom
   layers): per example
       w_i * (embedding MSE + hidden MSE + attention MSE + domain_weight * domain-content MSE)
       + soft cross-entropy of the logits,
   with w_i = (1 + t_i) * lambda_i and the domain-expertise weight
   lambda_i = 1 / (1 + exp((1 - p_teacher(y_i | x_i))^2)), which favours examples the meta-teacher
   gets right with confidence. The domain-content term compares the student's and the
   meta-teacher's domain-head outputs (the student's head starts as a copy of the teacher's).
   One stage with the summed loss (the reference code runs the intermediate and prediction
   terms as two stages).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from adapterkit.toolkit.features import masked_mean
from adapterkit.toolkit.scoring import predict_logits
from adapterkit.transfer.kd import distill, train_supervised


class DomainHead(nn.Module):
    """Domain corruption head: (token states, mask, domain ids) -> (domain logits, content vector)."""

    def __init__(self, num_domains: int, hidden: int) -> None:
        super().__init__()
        self.domain_embedding = nn.Embedding(num_domains, hidden)
        self.dense = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, num_domains)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, domains: torch.Tensor):
        pooled = masked_mean(states[:, 1:], mask[:, 1:])  # (B, H): the tokens after [CLS]
        content = torch.tanh(self.dense(pooled + self.domain_embedding(domains)))
        return self.classifier(content), content


def expertise_weights(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """lambda_i = 1 / (1 + exp((1 - p_teacher(y_i))^2)), in [0.27, 0.5]."""
    p = teacher_logits.float().softmax(-1).gather(1, labels[:, None]).squeeze(1)
    return 1.0 / (1.0 + torch.exp((1.0 - p) ** 2))


def corruption_loss(head: DomainHead, domains: torch.Tensor):
    """extra_loss for `train_supervised`: cross-entropy of the domain head against shuffled domains."""
    def loss(out, batch) -> torch.Tensor:
        ids = domains[batch["_rows"]]
        logits, _ = head(out.hidden_states[-1], batch["attention_mask"], ids)
        return F.cross_entropy(logits, ids[torch.randperm(len(ids))])

    return loss


def train_meta_teacher(model: nn.Module, rows: list[dict], domains: torch.Tensor, scores: torch.Tensor,
                       cfg, pad_id: int = 0, domain_weight: float = 0.5) -> DomainHead:
    """Train `model` as the meta-teacher on all domains' `rows`; returns its trained domain head.

    `cfg` is a `kd.TrainConfig`; `scores` are the prototype scores t_i of `rows`."""
    torch.manual_seed(cfg.seed)
    head = DomainHead(int(domains.max()) + 1, model.config.hidden_size)
    weights = scores / scores.mean()
    base = corruption_loss(head, domains)
    train_supervised(model, rows, cfg, pad_id, weights=weights,
                     extra_loss=lambda out, batch: domain_weight * base(out, batch), extra_params=head.parameters())
    return head.eval()


def meta_distill(teacher: nn.Module, head: DomainHead, student: nn.Module, rows: list[dict], domain: int,
                 scores: torch.Tensor, cfg, pad_id: int = 0) -> dict:
    """Meta-distil `teacher` (with its domain `head`) into `student` on one domain's `rows`.

    `cfg` is a `kd.KDConfig` (its method is forced to "metakd"); `scores` are the rows' t_i."""
    labels = torch.tensor([r["labels"] for r in rows])
    weights = (1 + scores) * expertise_weights(predict_logits(teacher, rows, pad_id), labels)
    student_head = copy.deepcopy(head) if student.config.hidden_size == teacher.config.hidden_size \
        else DomainHead(head.domain_embedding.num_embeddings, student.config.hidden_size)
    head.requires_grad_(False)
    student_head.requires_grad_(True).train()
    cfg = copy.copy(cfg)
    cfg.method = "metakd"
    extras = {"weights": weights, "domains": torch.full((len(rows),), domain, dtype=torch.long)}
    result = distill(teacher, student, rows, cfg, pad_id, row_extras=extras,
                     modules={"teacher_head": head, "student_head": student_head})
    return {**result, "mean_weight": float(weights.mean())}


HEAD_FILE = "domain_head.safetensors"


def save_meta_teacher(model: nn.Module, head: DomainHead, folder, tokenizer, domains: list[str],
                      base_model: str | None = None) -> None:
    """A student-format folder (`save_student`) plus the domain head's weights."""
    from pathlib import Path

    from safetensors.torch import save_file

    from adapterkit.transfer.student import save_student

    folder = Path(folder)
    save_student(model, folder, tokenizer, {"kind": "meta-teacher", "domains": domains, "base_model": base_model,
                                            "num_domains": head.domain_embedding.num_embeddings})
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD_FILE))


def load_meta_teacher(folder):
    """(model, domain head, tokenizer, info) from `save_meta_teacher`."""
    from pathlib import Path

    from safetensors.torch import load_file

    from adapterkit import backbone
    from adapterkit.errors import AdapterkitError
    from adapterkit.transfer.student import load_student

    folder = Path(folder)
    model, info = load_student(folder)
    if info.get("kind") != "meta-teacher" or not (folder / HEAD_FILE).is_file():
        raise AdapterkitError(f"{folder}: not a MetaKD meta-teacher (write one with `adapterkit distill --method metakd`)")
    head = DomainHead(info["num_domains"], model.config.hidden_size)
    head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    tokenizer = backbone.load_tokenizer(str(folder / "tokenizer"))
    return model, head.eval(), tokenizer, info
