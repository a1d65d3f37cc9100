"""What producers and executors embed: the client and the executor gate."""
