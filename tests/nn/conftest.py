"""Models shared by the nn tests."""
import torch
from torch import nn


class Conv1dNet(nn.Module):
    """Conv1d(1,16,5) - Conv1d(16,16,5) - BN - max over time - Linear(16,16) - Linear(16,2)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv1d(16, 16, 5, padding=2)
        self.bn = nn.BatchNorm1d(16)
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc2(torch.relu(self.fc1(h.amax(-1))))
