"""dnnlab doctor: record what each layer does while a net trains, then say what is wrong and the chapter's remedy."""
