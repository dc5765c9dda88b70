"""First-order meta-learning of an adapter initialisation: Reptile and first-order MAML.

The meta-parameters theta are the adapter's parameters and the task head (a dict of model-level
names, as `adapter_parameters` and `head_parameters` give them). The inner loop never copies the
backbone or the model: it runs `torch.func.functional_call(model, phi, ...)` with the fast
weights phi in place of theta, and the frozen backbone's own tensors for everything else.

Inner loop (both): phi_0 = theta, phi_{j+1} = phi_j - inner_lr * grad L_task(phi_j; batch_j),
plain SGD over `inner_steps` support batches of one task (MAML's inner optimiser).

Reptile (Nichol, Achiam & Schulman 2018, https://arxiv.org/abs/1803.02999), the batched
version: theta <- theta + eps_t * mean_over_tasks(phi_task - theta), where eps_t = step_size *
(1 - t / meta_steps) (the paper's linear annealing of the outer step size to 0).

First-order MAML (Finn, Abbeel & Levine 2017, https://arxiv.org/abs/1703.03400, section 5.2):
the meta-gradient is the query-batch gradient taken at phi, ignoring second derivatives:
g = mean_over_tasks grad L_task(phi_task; query batch), applied to theta by an outer AdamW.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from adapterkit.toolkit.batching import model_inputs

Params = dict[str, torch.Tensor]


def task_loss(model, params: Params, batch: dict) -> torch.Tensor:
    """Cross-entropy of the model with `params` substituted (all other weights are the module's)."""
    logits = functional_call(model, params, args=(), kwargs=model_inputs(batch), strict=False).logits
    return F.cross_entropy(logits.float(), batch["labels"])


def adapt(model, theta: Params, support: list[dict], inner_lr: float, losses: list | None = None) -> Params:
    """Fast weights after one SGD step per support batch, starting from theta (theta unchanged).
    The support losses (before each step) are appended to `losses` when given."""
    phi = {n: p.detach().clone().requires_grad_(True) for n, p in theta.items()}
    for batch in support:
        loss = task_loss(model, phi, batch)
        grads = torch.autograd.grad(loss, list(phi.values()))
        phi = {n: (p - inner_lr * g).detach().requires_grad_(True) for (n, p), g in zip(phi.items(), grads)}
        if losses is not None:
            losses.append(loss.item())
    return phi


@torch.no_grad()
def reptile_update(theta: Params, adapted: list[Params], step_size: float) -> None:
    """In place: theta <- theta + step_size * mean_k(adapted_k - theta)."""
    for name, p in theta.items():
        target = torch.stack([a[name] for a in adapted]).mean(0)
        p.add_(step_size * (target - p))


def fomaml_gradient(model, theta: Params, tasks: list[tuple[list[dict], dict]], inner_lr: float,
                    losses: list | None = None) -> Params:
    """Mean over (support batches, query batch) pairs of the query gradient at the adapted weights.
    The query losses are appended to `losses` when given."""
    total = {n: torch.zeros_like(p) for n, p in theta.items()}
    for support, query in tasks:
        phi = adapt(model, theta, support, inner_lr)
        loss = task_loss(model, phi, query)
        grads = torch.autograd.grad(loss, list(phi.values()))
        if losses is not None:
            losses.append(loss.item())
        for name, g in zip(phi, grads):
            total[name] += g / len(tasks)
    return total


def reptile_step_size(step_size: float, step: int, meta_steps: int) -> float:
    """Linearly annealed outer step: step_size at step 0, towards 0 at the end."""
    return step_size * (1.0 - step / meta_steps)
