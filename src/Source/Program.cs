Console.Error.WriteLine("Migration commands arrive with the precopy migration issue."); return 2;
