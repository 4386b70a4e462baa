"""Dynamic-Capacity Mixture-of-Experts (paper §III-B): routing, dispatch, experts, balancing."""

from unimoe_audio.moe.balance import AuxLossSchedule, load_balancing_loss
from unimoe_audio.moe.experts import RoutedExperts, SwiGLU
from unimoe_audio.moe.layer import DCMoE, DCMoEConfig, MoEOutput
from unimoe_audio.moe.routing import official_weights, top_k_routing, top_p_routing
from unimoe_audio.moe.stats import RoutingStats

__all__ = [
    "AuxLossSchedule", "DCMoE", "DCMoEConfig", "MoEOutput", "RoutedExperts", "RoutingStats",
    "SwiGLU", "load_balancing_loss", "official_weights", "top_k_routing", "top_p_routing",
]
