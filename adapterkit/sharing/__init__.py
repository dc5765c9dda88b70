from adapterkit.sharing.plan import SharingPlan, make_plan, select_layers

__all__ = ["SharingPlan", "make_plan", "select_layers"]
