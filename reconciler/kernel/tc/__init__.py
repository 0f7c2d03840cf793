"""TC: tcx links (``tcx``), tc netlink (``netlink``), a TC program alone on its hook
(``direct``), our dispatcher pins as read by observe (``hooks``) and the dispatcher swap
(``dispatcher``)."""
