# about: live xl migrate to localhost (pvh guest; uses log-dirty through HAP)
migrate_scenario pvh migpvh
