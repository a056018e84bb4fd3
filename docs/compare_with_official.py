"""Image-by-image comparison of a net trained here with the official PyTorch code, both ways.

1. Builds RUN_DIR/net.config with the official `ProxylessNASNets.build_from_config` (imported
   from ../shared/peers/official-ref at run time, not copied), loads RUN_DIR/weights.safetensors
   strictly (less `num_batches_tracked`), applies the normalisation in its metadata, and
   computes the CIFAR-10 test logits; compares them with `proxyless eval --logits` output
   (OURS.npy): largest difference, argmax agreement, accuracy and mean CE per image.
2. Saves the official net's own state_dict as PyTorch has it (`save_file(net.state_dict())`,
   I64 `num_batches_tracked` included) to OUT.safetensors, for
   `proxyless eval --weights OUT.safetensors --normalize m1,m2,m3,s1,s2,s3` (printed).

usage: python docs/compare_with_official.py RUN_DIR CIFAR_DIR OURS.npy OUT.safetensors
(the venv of ../shared/peers/setup.sh, with `pip install safetensors`)
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', '..', 'shared', 'peers', 'official-ref'))
from proxyless_nas.nas_modules import ProxylessNASNets  # noqa: E402  (the official code)

run, cifar, ours_npy, out = sys.argv[1:5]
cfg = json.load(open(f'{run}/net.config'))
net = ProxylessNASNets.build_from_config(json.loads(json.dumps(cfg)))
if 'bn' in cfg:  # what the official proxyless_base() does after build_from_config
    net.set_bn_param(bn_momentum=cfg['bn']['momentum'], bn_eps=cfg['bn']['eps'])
with safe_open(f'{run}/weights.safetensors', 'pt') as f:
    meta = f.metadata() or {}
weights = load_file(f'{run}/weights.safetensors')
res = net.load_state_dict(weights, strict=False)
assert not res.unexpected_keys and all(k.endswith('num_batches_tracked') for k in res.missing_keys)
net.eval()

mean = np.array(json.loads(meta['normalize_mean']), dtype=np.float32)
std = np.array(json.loads(meta['normalize_std']), dtype=np.float32)
raw = np.fromfile(f'{cifar}/test_batch.bin', dtype=np.uint8).reshape(-1, 1 + 3 * 32 * 32)
labels = torch.from_numpy(raw[:, 0].astype(np.int64))
images = raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0)
images = (images - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1)
with torch.no_grad():
    theirs = torch.cat([net(torch.from_numpy(images[i:i + 500])) for i in range(0, len(images), 500)])
ours = torch.from_numpy(np.load(ours_npy))
assert ours.shape == theirs.shape, (ours.shape, theirs.shape)


def summary(logits):
    ce = F.cross_entropy(logits.double(), labels, reduction='none')
    return (logits.argmax(1) == labels).double().mean().item(), ce.mean().item(), ce


acc_t, ce_t, per_t = summary(theirs)
acc_o, ce_o, per_o = summary(ours)
print(f'official PyTorch: accuracy {100 * acc_t:.2f}%, mean CE per image {ce_t:.6f}')
print(f'proxyless eval:   accuracy {100 * acc_o:.2f}%, mean CE per image {ce_o:.6f}')
print(f'image by image over {len(labels)}: max |logit difference| {(ours - theirs).abs().max().item():.2e}, '
      f'same argmax {(ours.argmax(1) == theirs.argmax(1)).sum().item()}, '
      f'max |CE difference| {(per_o - per_t).abs().max().item():.2e}')

save_file(net.state_dict(), out)
dtypes = sorted({str(t.dtype) for t in net.state_dict().values()})
print(f'PyTorch state_dict saved as is to {out} ({len(net.state_dict())} tensors, dtypes {dtypes}); try:')
norm = ','.join(f'{v:.9g}' for v in list(mean) + list(std))
print(f'  proxyless eval --net {run}/net.config --weights {out} --data {cifar} --normalize {norm}')
