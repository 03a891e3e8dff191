"""Where key material lives and where private-key operations happen."""
