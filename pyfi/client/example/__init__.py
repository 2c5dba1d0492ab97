"""The seed's example sockets as partials (:mod:`pyfi.client.example.api`)."""
