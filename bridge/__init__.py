"""shroud-bridge: the attested server that runs inside a TDX confidential VM."""
