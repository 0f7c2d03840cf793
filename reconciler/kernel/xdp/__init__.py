"""XDP: netlink attach (``attach``), libxdp's dispatcher protocol (``proto``), our dispatcher
pins as read by observe (``hooks``) and the dispatcher swap (``dispatcher``)."""
