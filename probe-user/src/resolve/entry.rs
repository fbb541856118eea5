//! Where to put a uprobe in a function so that hitting it is cheap (placeholder: being written).
