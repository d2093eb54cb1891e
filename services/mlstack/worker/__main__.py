from mlstack.worker.main import main

main()
