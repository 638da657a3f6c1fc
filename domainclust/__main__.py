from domainclust.cli import main

main()
