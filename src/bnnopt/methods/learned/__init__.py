"""bnnopt.methods.learned: learned-gradient methods (hypernetworks that generate the gradient).

Registered methods (``METHODS``):

fcgrad    MetaQuant FC-Grad: M = FC(dL/dQ)
multifc   MetaQuant MultiFC: M = dL/dQ * MultiFC(W-hat)
lstmfc    MetaQuant LSTMFC:  M = dL/dQ * fc(LSTM(W-hat)), hidden state per layer
fsg       FSG (AAAI 2025): fast-net + Mamba/LSTM slow-net over HGS with LRE
          (variant "paper"|"official", layout "per-weight"|"flat", preset
          "cpu"|"paper"|"official"; slow_net "lstmfc" = the official MetaFastAndLSTM)

Every method of the family takes ``variant="official"`` = the official code exactly
(first iteration without update, :class:`OfficialEpsAdam`'s epsilon placement, bias
look-ahead; tests/methods/learned/test_official_transcription.py).

The public optimizers (torch.optim.Optimizer subclasses wrapping a base optimizer, for
the user's own loop; also ``bnnopt.FSG`` etc.): :class:`FSG`, :class:`FCGrad`,
:class:`MultiFC`, :class:`LSTMFC` (base: :class:`LearnedOptimizer`). The Trainer's
methods (:class:`FSGMethod`, :class:`FCGradMethod`, :class:`MultiFCMethod`,
:class:`LSTMFCMethod`) step through them.

Building blocks: :class:`LearnedGradientMethod` (the shared step, FSG Algorithm 1),
:class:`HistoryBuffer` (HGS), :class:`LayerEmbedding` (LRE), :class:`LinearStack`
and :class:`LSTMFCNet` (element-wise meta-nets), the slow-nets
(:func:`make_slow_net`: :class:`MambaSlowNet`, :class:`LSTMSlowNet`); the Mamba block
they use lives in :mod:`bnnopt.ssm`.
"""
from bnnopt.methods.learned.fsg import FSGMethod
from bnnopt.methods.learned.hgs import HistoryBuffer
from bnnopt.methods.learned.base import LearnedGradientMethod, MetaInputs, calibration
from bnnopt.methods.learned.lre import LayerEmbedding
from bnnopt.methods.learned.meta_nets import LinearStack, LSTMFCNet
from bnnopt.methods.learned.metaquant import (FCGradMethod, LSTMFCMethod, MetaQuantMethod,
                                              MultiFCMethod)
from bnnopt.methods.learned.official_adam import OfficialEpsAdam
from bnnopt.methods.learned.fsg import FSG
from bnnopt.methods.learned.metaquant import FCGrad, LSTMFC, MultiFC
from bnnopt.methods.learned.optimizer import LearnedOptimizer
from bnnopt.methods.learned.slow_nets import LSTMSlowNet, MambaSlowNet, make_slow_net

__all__ = [
    "FSG", "FSGMethod", "FCGrad", "FCGradMethod", "HistoryBuffer", "LSTMFCMethod",
    "LearnedOptimizer", "MultiFCMethod", "LSTMFC", "LSTMFCNet", "LSTMSlowNet", "LayerEmbedding",
    "LearnedGradientMethod", "LinearStack", "MambaSlowNet", "MetaInputs",
    "MetaQuantMethod", "MultiFC", "OfficialEpsAdam", "calibration", "make_slow_net",
]
