"""bitad's model toolchain: import, train BiTA adapters, export and quantise model packages."""
