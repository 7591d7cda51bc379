"""SyncBatchNorm for ``--sync-bn``: torch's on CUDA, a gloo-capable one on the CPU.

``torch.nn.SyncBatchNorm`` refuses CPU tensors, but multi-process CPU runs (gloo;
every test of bnnopt's scale-out) need the same arithmetic. :class:`CPUSyncBatchNorm`
computes, in training mode, the statistics of the *global* batch spread over the
ranks of the default process group, per channel c (x_r: rank r's activations,
N = sum_r n_r values per channel)::

    mean_c = (1/N) sum_r sum x_r                      (one all-reduce)
    var_c  = (1/N) sum_r sum (x_r - mean_c)^2         (a second one; two-pass, as F.batch_norm)
    y      = (x - mean) / sqrt(var + eps) * weight + bias
    running stats: momentum update with the unbiased var * N / (N - 1)

Backward (x̂ = (x - mean)·invstd, sums over the global batch, one all-reduce)::

    dx = weight·invstd · (dy - Σdy/N - x̂·Σ(dy·x̂)/N)
    dweight = Σ_local dy·x̂,  dbias = Σ_local dy      (DistributedDataParallel averages these)

That is the gradient of the sum of all ranks' losses, as ``torch.nn.SyncBatchNorm``
computes it; with bnnopt's sharded loss it equals one process on the global batch.
Evaluation mode, or a single process, is plain ``F.batch_norm``. State-dict keys are
those of ``nn.BatchNorm*d``, so checkpoints load into the unconverted model.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm"]


def _all_reduce(t: Tensor) -> Tensor:
    dist.all_reduce(t)
    return t


class _SyncBNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum):
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        n_local = x.numel() // x.shape[1]
        stats = torch.cat([x.sum(dims), x.new_tensor([float(n_local)])])
        _all_reduce(stats)
        count = stats[-1]
        mean = stats[:-1] / count
        centred = x - mean.view(shape)
        var = _all_reduce(centred.square().sum(dims)) / count
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp(min=1)
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        xhat = centred * invstd.view(shape)
        ctx.save_for_backward(xhat, invstd, weight, count)
        ctx.dims, ctx.shape = dims, shape
        ctx.affine = (weight is not None, bias is not None)
        y = xhat
        if weight is not None:
            y = y * weight.view(shape)
        if bias is not None:
            y = y + bias.view(shape)
        return y

    @staticmethod
    def backward(ctx, dy):
        xhat, invstd, weight, count = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        local_dy = dy.sum(dims)
        local_dy_xhat = (dy * xhat).sum(dims)
        sums = _all_reduce(torch.cat([local_dy, local_dy_xhat]))
        sum_dy, sum_dy_xhat = sums.chunk(2)
        scale = invstd if weight is None else invstd * weight
        dx = scale.view(shape) * (dy - (sum_dy / count).view(shape)
                                  - xhat * (sum_dy_xhat / count).view(shape))
        has_w, has_b = ctx.affine
        return (dx, local_dy_xhat if has_w else None, local_dy if has_b else None,
                None, None, None, None)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks, for any device (gloo or NCCL)."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        sync = (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1)
        if not sync:
            return super().forward(x)
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        running = self.track_running_stats
        return _SyncBNFunction.apply(x, self.weight, self.bias,
                                     self.running_mean if running else None,
                                     self.running_var if running else None, self.eps,
                                     momentum if momentum is not None else 0.0)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Replace every BatchNorm*d of ``model`` in place; return how many were converted.

    CUDA: ``torch.nn.SyncBatchNorm``; other devices: :class:`CPUSyncBatchNorm`. The
    parameters and buffers are the same tensors (optimizers built before stay valid).
    """
    converted = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
                child, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
            cls = nn.SyncBatchNorm if device.type == "cuda" else CPUSyncBatchNorm
            new = cls(child.num_features, child.eps, child.momentum, child.affine,
                      child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(model, name, new)
            converted += 1
        else:
            converted += convert_sync_batchnorm(child, device)
    return converted
