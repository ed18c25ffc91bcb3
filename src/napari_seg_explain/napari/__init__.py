"""Everything that touches napari or Qt: reader, writer, sample data, widgets, result layers."""
