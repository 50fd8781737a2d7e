<#
.SYNOPSIS
Stops the LlamaRunner Pro that runs from AppDir, gently first.

.DESCRIPTION
Run by the installer before it replaces files and by the uninstaller before it removes
them. It sends "quit" through the app's single-instance control endpoint (the same one a
second launch uses to wake the first), so the app stops its llama-server runners itself
and exits. Whatever still runs from AppDir after TimeoutSeconds is ended with its whole
process tree. Only processes whose executable lies in AppDir are touched: a copy of the
app installed elsewhere (for example with pip) is left alone.

Exit status: 0 when nothing from AppDir runs any more, 1 otherwise.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string] $AppDir,
    [int] $TimeoutSeconds = 20
)

Set-StrictMode -Version 3
$ErrorActionPreference = 'Stop'

$ExeName = 'llamarunner.exe'
$AppExe = [IO.Path]::GetFullPath((Join-Path $AppDir $ExeName))
# Where the app writes <name>.endpoint: platformdirs' user data folder, or the override.
$DataDir = if ($env:LLAMARUNNER_DATA_DIR) { $env:LLAMARUNNER_DATA_DIR } else {
    Join-Path $env:LOCALAPPDATA 'llamarunner'
}
$EndpointFile = Join-Path $DataDir 'llamarunner.endpoint'

function Get-AppProcess {
    # ExecutablePath is empty for processes this user may not inspect: not ours. Callers
    # wrap the result in @() since PowerShell unrolls a function's output (one or none).
    Get-CimInstance -ClassName Win32_Process -Filter "Name = '$ExeName'" |
        Where-Object {
            $_.ExecutablePath -and [string]::Equals(
                [IO.Path]::GetFullPath($_.ExecutablePath), $AppExe,
                [StringComparison]::OrdinalIgnoreCase)
        }
}

function Wait-AppExit([int] $Seconds) {
    $deadline = (Get-Date).AddSeconds($Seconds)
    while (@(Get-AppProcess).Count -gt 0) {
        if ((Get-Date) -ge $deadline) { return $false }
        Start-Sleep -Milliseconds 250
    }
    return $true
}

function Send-QuitCommand {
    # The endpoint file holds {"pid", "port", "token"}; the app answers "ok" once it has
    # accepted the command (see llamarunner.integration.single_instance).
    if (-not (Test-Path -LiteralPath $EndpointFile)) { return $false }
    $client = $null
    try {
        $endpoint = Get-Content -LiteralPath $EndpointFile -Raw | ConvertFrom-Json
        $client = New-Object System.Net.Sockets.TcpClient
        $client.SendTimeout = 3000
        $client.ReceiveTimeout = 3000
        $client.Connect('127.0.0.1', [int] $endpoint.port)
        $stream = $client.GetStream()
        $request = @{ token = [string] $endpoint.token; command = 'quit' } |
            ConvertTo-Json -Compress
        $bytes = [Text.Encoding]::UTF8.GetBytes($request + "`n")
        $stream.Write($bytes, 0, $bytes.Length)
        $stream.Flush()
        $reader = New-Object System.IO.StreamReader($stream, [Text.Encoding]::UTF8)
        return ($reader.ReadLine() -eq 'ok')
    } catch {
        Write-Verbose "quit request failed: $_"
        return $false
    } finally {
        if ($client) { $client.Close() }
    }
}

if (@(Get-AppProcess).Count -eq 0) { exit 0 }

# The endpoint belongs to the instance holding the per-user lock; one runs from AppDir,
# and only one instance runs per user, so it is this one.
if ((Send-QuitCommand) -and (Wait-AppExit $TimeoutSeconds)) { exit 0 }

foreach ($proc in Get-AppProcess) {
    Write-Verbose "ending process tree $($proc.ProcessId)"
    # /T: llama-server children too, in case the app's job object did not take them along.
    & "$env:SystemRoot\System32\taskkill.exe" /PID $proc.ProcessId /T /F 2>&1 | Out-Null
}
if (Wait-AppExit 10) { exit 0 }
exit 1
