"""One module per problem: its notebook, its kernel cells, its visible checks and sample submissions."""
