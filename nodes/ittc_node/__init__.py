"""The ittc node daemon: one per site, holding one encrypted key share."""
