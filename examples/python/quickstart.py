"""Quick start: build DSNet's backbone, train it a few steps on random data, inspect feature maps.

    .venv/bin/python examples/python/quickstart.py
"""

import torch

import osteonet

torch.manual_seed(0)
model = osteonet.create_model("dsnet_resnet50", num_classes=3, in_chans=1)  # normal / osteopenia / osteoporosis
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
x, y = torch.randn(4, 1, 128, 128), torch.tensor([0, 1, 2, 1])
for step in range(3):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.3f}")

model.eval()
with torch.no_grad():
    for info, fmap in zip(model.feature_info, model.forward_intermediates(x[:1], intermediates_only=True)):
        print(f"{info['name']:8s} stride {info['stride']:2d} -> {tuple(fmap.shape)}")
torch.save(model.state_dict(), "/tmp/dsnet_resnet50.pt")
print("saved /tmp/dsnet_resnet50.pt; reload with create_model(...).load_state_dict(torch.load(...))")
